"""image bytes in Postgres

The gateway keeps an upload's bytes in ``image_data``, written by the statement that
records the job (one round trip, atomic with the job; no file created on the request
path). Images stored before this revision, or with ``AIGI_IMAGE_STORE=blob_store``,
stay in the blob store, where readers fall back to.

``STORAGE EXTERNAL``: PNG, JPEG and WebP are compressed already, so Postgres should
not spend CPU trying to compress them again; the bytes are moved out of line (TOAST)
uncompressed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_data",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["sha256"], ["images.sha256"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.execute("ALTER TABLE image_data ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    # Dropping the table would delete the only copy of these images.
    if op.get_bind().execute(sa.text("SELECT EXISTS (SELECT 1 FROM image_data)")).scalar():
        raise RuntimeError(
            "image_data holds uploaded images whose only copy is in Postgres; "
            "copy them to the blob store before downgrading below revision 0003"
        )
    op.drop_table("image_data")
