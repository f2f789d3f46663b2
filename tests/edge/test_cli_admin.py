"""`aigi tenant` and `aigi key`: callback URLs go through the same guard as the API's,
and a key can be revoked by the prefix `aigi key list` shows."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from services.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3/hook", "forbidden address"),
        ("http://a..example/hook", "not a valid host name"),
        ("http://" + "a" * 64 + ".example/hook", "not a valid host name"),
        ("ftp://example.com/hook", "only http, https"),
    ],
)
def test_tenant_callback_urls_are_checked(stack_env: dict[str, str], url: str, reason: str) -> None:
    name = f"cli-url-{time.time_ns()}"
    created = runner.invoke(app, ["tenant", "create", name, "--callback-url", url])
    assert created.exit_code == 2 and reason in created.output, created.output
    assert runner.invoke(app, ["tenant", "create", name]).exit_code == 0  # not created before
    updated = runner.invoke(app, ["tenant", "update", name, "--callback-url", url])
    assert updated.exit_code == 2 and reason in updated.output, updated.output


def test_tenant_update_sets_and_clears_the_callback(stack_env: dict[str, str]) -> None:
    from common.db.session import session_scope
    from common.tenants import get_tenant

    name = f"cli-update-{time.time_ns()}"
    assert runner.invoke(app, ["tenant", "create", name]).exit_code == 0
    allowed = "http://127.0.0.1:9/hook"  # 127.0.0.1 is allowed in the test settings
    updated = runner.invoke(app, ["tenant", "update", name, "--callback-url", allowed])
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.stdout)["default_callback_url"] == allowed
    cleared = runner.invoke(app, ["tenant", "update", name, "--callback-url", ""])
    assert cleared.exit_code == 0, cleared.output
    with session_scope(stack_env["AIGI_DATABASE_URL"]) as session:
        assert get_tenant(session, name).default_callback_url is None


def test_a_key_is_revoked_by_the_prefix_list_shows(stack_env: dict[str, str]) -> None:
    name = f"cli-revoke-{time.time_ns()}"
    assert runner.invoke(app, ["tenant", "create", name]).exit_code == 0
    key = json.loads(runner.invoke(app, ["key", "create", name]).stdout)["key"]
    listed = json.loads(runner.invoke(app, ["key", "list", name]).stdout)
    prefix = listed[0]["prefix"]
    assert key.startswith(f"aigi_{prefix}_")
    revoked = runner.invoke(app, ["key", "revoke", f"aigi_{prefix}"])  # as the key begins
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(runner.invoke(app, ["key", "list", name]).stdout)[0]["revoked_at"]
