from django.db import migrations, models
from django.db.models import Count, Q, Sum


def count_usage(apps, schema_editor):
    Session = apps.get_model("attachments", "Session")
    live = Q(attachments__purged_at__isnull=True)
    for session in Session.objects.annotate(
        files=Count("attachments", filter=live), total=Sum("attachments__size", filter=live)
    ).iterator():
        Session.objects.filter(pk=session.pk).update(
            used_files=session.files, used_bytes=session.total or 0
        )


class Migration(migrations.Migration):
    dependencies = [("attachments", "0002_session_token_owner")]

    operations = [
        migrations.AddField(
            model_name="session",
            name="used_files",
            field=models.PositiveIntegerField(default=0, editable=False, verbose_name="files used"),
        ),
        migrations.AddField(
            model_name="session",
            name="used_bytes",
            field=models.PositiveBigIntegerField(
                default=0, editable=False, verbose_name="bytes used"
            ),
        ),
        migrations.RunPython(count_usage, migrations.RunPython.noop),
    ]
