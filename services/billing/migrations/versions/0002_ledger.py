"""The ledger: accounts, transactions, entries; write-once triggers; the functions that move money.

Each money movement is one call of one function (``billing_charge``, ``billing_topup``,
``billing_refund``), one statement: it commits or rolls back whole, and the hot path (a charge)
costs one database round trip. Expected refusals leave the function as errors with billing's
own SQLSTATEs (class ``SB``), which abort the statement so nothing it wrote survives:

- ``SB402`` insufficient funds (DETAIL: the wallet's current balance)
- ``SB422`` the key was used before for a different request
- ``SB404`` refund of an unknown transaction; ``SB409`` refund larger than what is left
- ``SB423`` a ledger row may not be changed (UPDATE/DELETE/TRUNCATE on transactions, entries)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


# Written out rather than imported: a revision must keep meaning what it meant when it was written.
FUNCTIONS = [
    # Refuse every change to a written ledger row.
    """
    CREATE FUNCTION billing_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'ledger rows are written once: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'SB423', HINT = 'Correct a transaction with a reversing transaction.';
    END $$
    """,
    """
    CREATE TRIGGER transactions_write_once BEFORE UPDATE OR DELETE ON transactions
      FOR EACH ROW EXECUTE FUNCTION billing_refuse_change()
    """,
    """
    CREATE TRIGGER transactions_no_truncate BEFORE TRUNCATE ON transactions
      FOR EACH STATEMENT EXECUTE FUNCTION billing_refuse_change()
    """,
    """
    CREATE TRIGGER entries_write_once BEFORE UPDATE OR DELETE ON entries
      FOR EACH ROW EXECUTE FUNCTION billing_refuse_change()
    """,
    """
    CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
      FOR EACH STATEMENT EXECUTE FUNCTION billing_refuse_change()
    """,
    # The id of an account, created on first use (a concurrent creator waits on the unique index
    # and then finds the row the other one inserted).
    """
    CREATE FUNCTION billing_account(p_kind text, p_owner uuid, p_currency text) RETURNS bigint
    LANGUAGE plpgsql AS $$
    DECLARE
      v_id bigint;
    BEGIN
      IF p_owner IS NULL THEN
        SELECT a.id INTO v_id FROM accounts a
         WHERE a.kind = p_kind AND a.owner_id IS NULL AND a.currency = p_currency;
      ELSE
        SELECT a.id INTO v_id FROM accounts a
         WHERE a.kind = p_kind AND a.owner_id = p_owner AND a.currency = p_currency;
      END IF;
      IF v_id IS NULL THEN
        INSERT INTO accounts (kind, owner_id, currency, balance)
        VALUES (p_kind, p_owner, p_currency, CASE WHEN p_kind = 'wallet' THEN 0 END)
        ON CONFLICT ON CONSTRAINT uq_accounts_kind_owner_id_currency DO NOTHING
        RETURNING id INTO v_id;
        IF v_id IS NULL THEN
          SELECT a.id INTO v_id FROM accounts a
           WHERE a.kind = p_kind AND a.owner_id IS NOT DISTINCT FROM p_owner AND a.currency = p_currency;
        END IF;
      END IF;
      RETURN v_id;
    END $$
    """,
    # A charge: the key decides (a concurrent duplicate waits on the unique index, then finds the
    # first); then the wallet row (the only row updated), then three entries.
    """
    CREATE FUNCTION billing_charge(
      p_key text, p_request_hash bytea, p_viewer uuid, p_creator uuid, p_video uuid,
      p_session uuid, p_unit integer, p_amount bigint, p_fee_bps integer, p_currency text
    ) RETURNS TABLE (
      transaction_id uuid, amount bigint, platform_fee bigint, balance bigint,
      created_at timestamptz, replayed boolean
    )
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
      v_tx uuid;
      v_created timestamptz;
      v_fee bigint := p_amount * p_fee_bps / 10000;
      v_wallet bigint;
      v_balance bigint;
      v_stored transactions%ROWTYPE;
    BEGIN
      INSERT INTO transactions AS t (id, kind, key, request_hash, currency, amount, platform_fee, fee_bps,
                                     viewer_id, creator_id, video_id, session_id, unit)
      VALUES (gen_random_uuid(), 'charge', p_key, p_request_hash, p_currency, p_amount, v_fee, p_fee_bps,
              p_viewer, p_creator, p_video, p_session, p_unit)
      ON CONFLICT ON CONSTRAINT uq_transactions_key DO NOTHING
      RETURNING t.id, t.created_at INTO v_tx, v_created;

      IF v_tx IS NULL THEN
        SELECT * INTO v_stored FROM transactions t WHERE t.key = p_key;
        IF v_stored.kind <> 'charge' OR v_stored.request_hash <> p_request_hash THEN
          RAISE EXCEPTION 'idempotency_key_reused' USING ERRCODE = 'SB422';
        END IF;
        SELECT a.balance INTO v_balance FROM accounts a
         WHERE a.kind = 'wallet' AND a.owner_id = p_viewer AND a.currency = p_currency;
        RETURN QUERY SELECT v_stored.id, v_stored.amount, v_stored.platform_fee, coalesce(v_balance, 0),
                            v_stored.created_at, true;
        RETURN;
      END IF;

      UPDATE accounts a SET balance = a.balance - p_amount
       WHERE a.kind = 'wallet' AND a.owner_id = p_viewer AND a.currency = p_currency
         AND a.balance >= p_amount
      RETURNING a.id, a.balance INTO v_wallet, v_balance;
      IF v_wallet IS NULL THEN
        SELECT a.balance INTO v_balance FROM accounts a
         WHERE a.kind = 'wallet' AND a.owner_id = p_viewer AND a.currency = p_currency;
        RAISE EXCEPTION 'insufficient_funds'
          USING ERRCODE = 'SB402', DETAIL = coalesce(v_balance, 0)::text;
      END IF;

      INSERT INTO entries (transaction_id, account_id, amount, balance_after) VALUES
        (v_tx, v_wallet, -p_amount, v_balance),
        (v_tx, billing_account('creator', p_creator, p_currency), p_amount - v_fee, NULL),
        (v_tx, billing_account('platform', NULL, p_currency), v_fee, NULL);
      RETURN QUERY SELECT v_tx, p_amount, v_fee, v_balance, v_created, false;
    END $$
    """,
    # A top-up the payment provider approved: the wallet (created on first top-up) and the
    # external funding account.
    """
    CREATE FUNCTION billing_topup(
      p_key text, p_request_hash bytea, p_user uuid, p_amount bigint, p_currency text,
      p_payment_method text, p_provider_reference text
    ) RETURNS TABLE (
      transaction_id uuid, amount bigint, balance bigint, created_at timestamptz, replayed boolean
    )
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
      v_tx uuid;
      v_created timestamptz;
      v_wallet bigint;
      v_balance bigint;
      v_stored transactions%ROWTYPE;
    BEGIN
      INSERT INTO transactions AS t (id, kind, key, request_hash, currency, amount, viewer_id,
                                     payment_method, provider_reference)
      VALUES (gen_random_uuid(), 'topup', p_key, p_request_hash, p_currency, p_amount, p_user,
              p_payment_method, p_provider_reference)
      ON CONFLICT ON CONSTRAINT uq_transactions_key DO NOTHING
      RETURNING t.id, t.created_at INTO v_tx, v_created;

      IF v_tx IS NULL THEN
        SELECT * INTO v_stored FROM transactions t WHERE t.key = p_key;
        IF v_stored.kind <> 'topup' OR v_stored.request_hash <> p_request_hash THEN
          RAISE EXCEPTION 'idempotency_key_reused' USING ERRCODE = 'SB422';
        END IF;
        RETURN QUERY SELECT v_stored.id, v_stored.amount, e.balance_after, v_stored.created_at, true
          FROM entries e WHERE e.transaction_id = v_stored.id AND e.balance_after IS NOT NULL;
        RETURN;
      END IF;

      INSERT INTO accounts AS a (kind, owner_id, currency, balance)
      VALUES ('wallet', p_user, p_currency, p_amount)
      ON CONFLICT ON CONSTRAINT uq_accounts_kind_owner_id_currency
        DO UPDATE SET balance = a.balance + EXCLUDED.balance
      RETURNING a.id, a.balance INTO v_wallet, v_balance;

      INSERT INTO entries (transaction_id, account_id, amount, balance_after) VALUES
        (v_tx, v_wallet, p_amount, v_balance),
        (v_tx, billing_account('external', NULL, p_currency), -p_amount, NULL);
      RETURN QUERY SELECT v_tx, p_amount, v_balance, v_created, false;
    END $$
    """,
    # A refund of all (p_amount NULL) or part of a charge, as a reversing transaction. The key is
    # locked first (two requests with one key run one after the other, whatever their bodies),
    # then the charge row, so refunds of one charge never exceed it together.
    # Split: cumulative rounding, so the parts of all refunds of a charge add up exactly to the
    # charge's parts once it is fully refunded: after this refund the platform has given back
    # floor(refunded_total * fee / amount) in all.
    """
    CREATE FUNCTION billing_refund(
      p_key text, p_request_hash bytea, p_charge uuid, p_amount bigint, p_actor uuid, p_reason text
    ) RETURNS TABLE (
      transaction_id uuid, refund_of uuid, amount bigint, platform_fee bigint, balance bigint,
      created_at timestamptz, replayed boolean
    )
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
      v_stored transactions%ROWTYPE;
      v_charge transactions%ROWTYPE;
      v_refunded bigint;
      v_amount bigint;
      v_fee bigint;
      v_tx uuid := gen_random_uuid();
      v_created timestamptz;
      v_wallet bigint;
      v_balance bigint;
    BEGIN
      PERFORM pg_advisory_xact_lock(hashtextextended(p_key, 0));
      SELECT * INTO v_stored FROM transactions t WHERE t.key = p_key;
      IF FOUND THEN
        IF v_stored.kind <> 'refund' OR v_stored.request_hash <> p_request_hash THEN
          RAISE EXCEPTION 'idempotency_key_reused' USING ERRCODE = 'SB422';
        END IF;
        RETURN QUERY SELECT v_stored.id, v_stored.refund_of, v_stored.amount, v_stored.platform_fee,
                            e.balance_after, v_stored.created_at, true
          FROM entries e WHERE e.transaction_id = v_stored.id AND e.balance_after IS NOT NULL;
        RETURN;
      END IF;

      SELECT * INTO v_charge FROM transactions t WHERE t.id = p_charge AND t.kind = 'charge'
        FOR NO KEY UPDATE;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'charge_not_found' USING ERRCODE = 'SB404';
      END IF;
      SELECT coalesce(sum(t.amount), 0) INTO v_refunded FROM transactions t WHERE t.refund_of = p_charge;
      v_amount := coalesce(p_amount, v_charge.amount - v_refunded);
      IF v_amount <= 0 OR v_amount > v_charge.amount - v_refunded THEN
        RAISE EXCEPTION 'refund_exceeds_charge'
          USING ERRCODE = 'SB409', DETAIL = (v_charge.amount - v_refunded)::text;
      END IF;
      v_fee := (v_refunded + v_amount) * v_charge.platform_fee / v_charge.amount
               - v_refunded * v_charge.platform_fee / v_charge.amount;

      UPDATE accounts a SET balance = a.balance + v_amount
       WHERE a.kind = 'wallet' AND a.owner_id = v_charge.viewer_id AND a.currency = v_charge.currency
      RETURNING a.id, a.balance INTO v_wallet, v_balance;

      INSERT INTO transactions AS t (id, kind, key, request_hash, currency, amount, platform_fee, viewer_id,
                                     creator_id, video_id, session_id, unit, refund_of, actor_id, reason)
      VALUES (v_tx, 'refund', p_key, p_request_hash, v_charge.currency, v_amount, v_fee, v_charge.viewer_id,
              v_charge.creator_id, v_charge.video_id, v_charge.session_id, v_charge.unit, p_charge,
              p_actor, p_reason)
      RETURNING t.created_at INTO v_created;

      INSERT INTO entries (transaction_id, account_id, amount, balance_after) VALUES
        (v_tx, v_wallet, v_amount, v_balance),
        (v_tx, billing_account('creator', v_charge.creator_id, v_charge.currency), -(v_amount - v_fee), NULL),
        (v_tx, billing_account('platform', NULL, v_charge.currency), -v_fee, NULL);
      RETURN QUERY SELECT v_tx, p_charge, v_amount, v_fee, v_balance, v_created, false;
    END $$
    """,
]


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=True),
        _created_at(),
        sa.CheckConstraint(
            "kind IN ('wallet', 'creator', 'platform', 'external')", name=op.f("ck_accounts_kind")
        ),
        sa.CheckConstraint(
            "(kind IN ('wallet', 'creator')) = (owner_id IS NOT NULL)", name=op.f("ck_accounts_owner")
        ),
        sa.CheckConstraint(
            "(kind = 'wallet') = (balance IS NOT NULL)", name=op.f("ck_accounts_maintained_balance")
        ),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_accounts_balance_non_negative")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_accounts_currency")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint(
            "kind",
            "owner_id",
            "currency",
            name=op.f("uq_accounts_kind_owner_id_currency"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("platform_fee", sa.BigInteger(), nullable=True),
        sa.Column("fee_bps", sa.Integer(), nullable=True),
        sa.Column("viewer_id", sa.Uuid(), nullable=False),
        sa.Column("creator_id", sa.Uuid(), nullable=True),
        sa.Column("video_id", sa.Uuid(), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("unit", sa.Integer(), nullable=True),
        sa.Column("refund_of", sa.Uuid(), nullable=True),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("payment_method", sa.String(), nullable=True),
        sa.Column("provider_reference", sa.String(), nullable=True),
        _created_at(),
        sa.CheckConstraint("kind IN ('topup', 'charge', 'refund')", name=op.f("ck_transactions_kind")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_transactions_amount_positive")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_transactions_currency")),
        sa.CheckConstraint("char_length(key) BETWEEN 1 AND 300", name=op.f("ck_transactions_key_length")),
        sa.CheckConstraint(
            "octet_length(request_hash) = 32", name=op.f("ck_transactions_request_hash_length")
        ),
        sa.CheckConstraint("platform_fee BETWEEN 0 AND amount", name=op.f("ck_transactions_platform_fee")),
        sa.CheckConstraint("fee_bps BETWEEN 0 AND 10000", name=op.f("ck_transactions_fee_bps")),
        sa.CheckConstraint("unit >= 0", name=op.f("ck_transactions_unit_non_negative")),
        sa.CheckConstraint(
            "kind <> 'charge' OR (creator_id IS NOT NULL AND video_id IS NOT NULL AND session_id IS NOT NULL"
            " AND unit IS NOT NULL AND platform_fee IS NOT NULL AND fee_bps IS NOT NULL"
            " AND refund_of IS NULL)",
            name=op.f("ck_transactions_charge_fields"),
        ),
        sa.CheckConstraint(
            "kind <> 'refund' OR (refund_of IS NOT NULL AND platform_fee IS NOT NULL"
            " AND creator_id IS NOT NULL AND actor_id IS NOT NULL)",
            name=op.f("ck_transactions_refund_fields"),
        ),
        sa.CheckConstraint(
            "kind <> 'topup' OR (provider_reference IS NOT NULL AND payment_method IS NOT NULL"
            " AND platform_fee IS NULL AND refund_of IS NULL)",
            name=op.f("ck_transactions_topup_fields"),
        ),
        sa.CheckConstraint("char_length(reason) <= 500", name=op.f("ck_transactions_reason_length")),
        sa.ForeignKeyConstraint(
            ["refund_of"], ["transactions.id"], name=op.f("fk_transactions_refund_of_transactions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
        sa.UniqueConstraint("key", name=op.f("uq_transactions_key")),
    )
    op.create_index(
        "ix_transactions_refund_of",
        "transactions",
        ["refund_of"],
        postgresql_where=sa.text("refund_of IS NOT NULL"),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("balance_after >= 0", name=op.f("ck_entries_balance_after_non_negative")),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["transactions.id"], name=op.f("fk_entries_transaction_id_transactions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
    )
    op.create_index(
        "ix_entries_account_id_id", "entries", ["account_id", "id"], postgresql_include=["amount"]
    )
    op.create_index(
        "ix_entries_wallet_transaction",
        "entries",
        ["transaction_id"],
        postgresql_where=sa.text("balance_after IS NOT NULL"),
    )
    for statement in FUNCTIONS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION billing_refund(text, bytea, uuid, bigint, uuid, text)")
    op.execute("DROP FUNCTION billing_topup(text, bytea, uuid, bigint, text, text, text)")
    op.execute(
        "DROP FUNCTION billing_charge(text, bytea, uuid, uuid, uuid, uuid, integer, bigint, integer, text)"
    )
    op.execute("DROP FUNCTION billing_account(text, uuid, text)")
    op.drop_table("entries")
    op.drop_table("transactions")
    op.drop_table("accounts")
    op.execute("DROP FUNCTION billing_refuse_change()")
