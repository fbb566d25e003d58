"""The report service: scopes as last seen (with their tenant), API keys, on-demand refreshes.

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
        "precompute_scopes",
        sa.Column("tool", sa.String(100), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("tenant", sa.String(200)),
        sa.Column("utilisation", sa.Float),
        sa.Column("watermark", sa.Text),
        sa.Column("observed_at", sa.Float, nullable=False),
    )
    op.create_index("ix_precompute_scopes_tool_tenant", "precompute_scopes", ["tool", "tenant"])
    # Every scope with a report is known, as its report saw it.
    op.execute(
        "INSERT INTO precompute_scopes (tool, scope, tenant, utilisation, watermark, observed_at)"
        " SELECT tool, scope, tenant, utilisation, watermark, computed_at"
        " FROM precompute_report_headers"
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
    op.drop_index("ix_precompute_scopes_tool_tenant", "precompute_scopes")
    op.drop_table("precompute_scopes")
