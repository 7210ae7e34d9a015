"""Per-session attachments: files on disk, their manifest, and their records."""
