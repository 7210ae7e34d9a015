"""The dashboard page: rendered by Django, its assets shipped in the app."""

from __future__ import annotations

import re

from django.contrib.staticfiles import finders
from django.test import SimpleTestCase


class DashboardPageTests(SimpleTestCase):
    def test_renders_at_the_root_with_a_strict_policy(self):
        response = self.client.get("/")
        assert response.status_code == 200
        assert response.templates[0].name == "artifacts/dashboard.html"
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert response["Referrer-Policy"] == "no-referrer"

    def test_tells_the_scripts_where_the_api_is(self):
        content = self.client.get("/").content.decode()
        assert 'data-api-root="/api/"' in content
        assert 'name="csrf-token"' in content

    def test_loads_only_local_assets_that_the_app_ships(self):
        content = self.client.get("/").content.decode()
        assets = re.findall(r'(?:src|href)="/static/([^"]+)"', content)
        assert {"artifacts/dashboard.js", "artifacts/dashboard.css"} <= set(assets)
        for asset in assets:
            assert finders.find(asset), asset
        assert "http://" not in content and "https://" not in content

    def test_the_scripts_import_only_shipped_modules(self):
        entry = finders.find("artifacts/dashboard.js")
        with open(entry) as file:
            imports = re.findall(r'from "\./([^"]+)"', file.read())
        assert imports
        for module in imports:
            assert finders.find(f"artifacts/{module}"), module

    def test_only_reads(self):
        assert self.client.post("/").status_code == 405
