"""Scopes as last seen (refresh state, tenant), the catalogue's cursor, API keys, on-demand
refresh requests.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "precompute_scope_states",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("tenant", sa.String(200)),
        sa.Column("utilisation", sa.Float),
        sa.Column("watermark", sa.Text),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.Column("registered", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("requested_at", sa.Float),
        sa.Column("request_key", sa.Text),
        sa.Column("fresh_recorded", sa.Boolean),
    )
    op.create_index(
        "ix_precompute_scope_states_tool_tenant", "precompute_scope_states", ["tool", "tenant"]
    )
    # Every scope with a report is known, as its report saw it.
    op.execute(
        "INSERT INTO precompute_scope_states (tool, scope, tenant, utilisation, watermark, seen_at)"
        " SELECT tool, scope, tenant, utilisation, watermark, computed_at"
        " FROM precompute_report_headers"
    )
    op.create_table(
        "precompute_catalogue_cursors",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("cursor", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "precompute_api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("tenant", sa.String(200)),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_table(
        "precompute_refresh_requests",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("run_id", sa.String(64)),
        sa.Column("requested_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("precompute_refresh_requests")
    op.drop_table("precompute_api_keys")
    op.drop_table("precompute_catalogue_cursors")
    op.drop_index("ix_precompute_scope_states_tool_tenant", "precompute_scope_states")
    op.drop_table("precompute_scope_states")
