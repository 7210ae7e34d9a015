# Sourced by scripts/serve and scripts/test: makes sure this checkout has a
# virtualenv with the project and the given extras installed, reinstalling
# only when pyproject.toml changed, so both commands are safe to run again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"

require_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYTHON="$candidate"
            return
        fi
    done
    echo "Python 3.11 or newer is required." >&2
    exit 1
}

have_library() { ldconfig -p 2>/dev/null | grep -q "$1"; }
have_command() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

install_system_package() {
    # $1: a check ("have_library libx.so.1" or "have_command x"), $2: the Debian package.
    if $1; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing $2 ..." >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    else
        echo "Please install $2 (for: $1), then run this again." >&2
        exit 1
    fi
}

bootstrap() {
    local extras="${1:-}"
    install_system_package "have_library libmagic.so.1" libmagic1
    # Python nodes of workflows run confined by bubblewrap (workflows.sandbox).
    install_system_package "have_command bwrap" bubblewrap
    if [ ! -x "$VENV/bin/python" ]; then
        require_python
        echo "Creating $VENV ..." >&2
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed${extras:+-$extras}"
    local wanted
    wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
        echo "Installing the project${extras:+ with [$extras]} into $VENV ..." >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".${extras:+[$extras]}"
        echo "$wanted" >"$stamp"
    fi
}
