"""Remediation: actions (plans, applies, undos: the audit log), their batches, admin sessions.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "precompute_actions",
        sa.Column("action_id", sa.String(32), primary_key=True),
        sa.Column("tool", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(200)),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("undoes", sa.String(32), unique=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("watermark", sa.Text, nullable=False),
        sa.Column("entities", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("run_id", sa.String(64)),
        sa.Column("refresh_run_id", sa.String(64)),
        sa.Column("applied_count", sa.Integer),
        sa.Column("skipped_count", sa.Integer),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("submitted_at", sa.Float),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index(
        "ix_precompute_actions_tenant_created", "precompute_actions", ["tenant", "created_at"]
    )
    op.create_index(
        "ix_precompute_actions_scope_created",
        "precompute_actions",
        ["tool", "scope", "created_at"],
    )
    op.create_table(
        "precompute_action_batches",
        sa.Column("action_id", sa.String(32), primary_key=True),
        sa.Column("batch", sa.Integer, primary_key=True),
        sa.Column("entities", sa.Text, nullable=False),
        sa.Column("applied", sa.Text),
        sa.Column("skipped", sa.Text),
        sa.Column("undo", sa.Text),
        sa.Column("prepared_at", sa.Float),
        sa.Column("done_at", sa.Float),
    )
    op.create_table(
        "precompute_admin_sessions",
        sa.Column("session_hash", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_precompute_admin_sessions_expires_at", "precompute_admin_sessions", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_precompute_admin_sessions_expires_at", "precompute_admin_sessions")
    op.drop_table("precompute_admin_sessions")
    op.drop_table("precompute_action_batches")
    op.drop_index("ix_precompute_actions_scope_created", "precompute_actions")
    op.drop_index("ix_precompute_actions_tenant_created", "precompute_actions")
    op.drop_table("precompute_actions")
