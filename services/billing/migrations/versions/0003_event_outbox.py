"""Billing's events through an outbox: each money movement writes its event in its own statement.

``event_outbox`` (common.outbox) holds events until the relay has put them on the stream. The
three ledger functions gain a last argument, the event id (derived by the caller from the fact:
``common.events.event_id``; PostgreSQL has no uuid5 without an extension; a random one when a
caller leaves it out, e.g. SQL run by hand or by a bench), and insert the
envelope, built here as JSON, in the same transaction as the entries: a charge stays one
statement and one round trip, and a movement is never committed without its event. A replayed
request writes no event (the first one did).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SIGNATURES = {
    "billing_charge": "text, bytea, uuid, uuid, uuid, uuid, integer, bigint, integer, text",
    "billing_topup": "text, bytea, uuid, bigint, text, text, text",
    "billing_refund": "text, bytea, uuid, bigint, uuid, text",
}

# Written out rather than imported: a revision must keep meaning what it meant when it was written.
FUNCTIONS = [
    # The envelope of common.events.Event as JSON text into the outbox; occurred_at in UTC with a
    # Z, as pydantic writes it. plpgsql rather than sql: its INSERT's plan is cached per connection.
    """
    CREATE FUNCTION billing_event(p_id uuid, p_type text, p_at timestamptz, p_payload json)
    RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO event_outbox (id, type, envelope)
      VALUES (p_id, p_type, json_build_object(
        'id', p_id, 'type', p_type, 'version', 1,
        'occurred_at', to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'producer', 'billing', 'payload', p_payload)::text);
    END $$
    """,
    """
    CREATE FUNCTION billing_charge(
      p_key text, p_request_hash bytea, p_viewer uuid, p_creator uuid, p_video uuid,
      p_session uuid, p_unit integer, p_amount bigint, p_fee_bps integer, p_currency text,
      p_event uuid DEFAULT gen_random_uuid()
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
      PERFORM billing_event(p_event, 'billing.unit_charged', v_created, json_build_object(
        'transaction_id', v_tx, 'key', p_key, 'session_id', p_session, 'unit', p_unit,
        'viewer_id', p_viewer, 'creator_id', p_creator, 'video_id', p_video, 'amount', p_amount,
        'creator_share', p_amount - v_fee, 'platform_fee', v_fee, 'currency', p_currency));
      RETURN QUERY SELECT v_tx, p_amount, v_fee, v_balance, v_created, false;
    END $$
    """,
    """
    CREATE FUNCTION billing_topup(
      p_key text, p_request_hash bytea, p_user uuid, p_amount bigint, p_currency text,
      p_payment_method text, p_provider_reference text, p_event uuid DEFAULT gen_random_uuid()
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
      PERFORM billing_event(p_event, 'billing.topup_succeeded', v_created, json_build_object(
        'transaction_id', v_tx, 'user_id', p_user, 'amount', p_amount, 'balance', v_balance,
        'currency', p_currency));
      RETURN QUERY SELECT v_tx, p_amount, v_balance, v_created, false;
    END $$
    """,
    """
    CREATE FUNCTION billing_refund(
      p_key text, p_request_hash bytea, p_charge uuid, p_amount bigint, p_actor uuid, p_reason text,
      p_event uuid DEFAULT gen_random_uuid()
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
      PERFORM billing_event(p_event, 'billing.refund_issued', v_created, json_build_object(
        'transaction_id', v_tx, 'refund_of', p_charge, 'charge_key', v_charge.key,
        'viewer_id', v_charge.viewer_id, 'creator_id', v_charge.creator_id,
        'video_id', v_charge.video_id, 'amount', v_amount, 'creator_part', v_amount - v_fee,
        'platform_part', v_fee, 'currency', v_charge.currency, 'actor_id', p_actor));
      RETURN QUERY SELECT v_tx, p_charge, v_amount, v_fee, v_balance, v_created, false;
    END $$
    """,
]


def _previous_functions() -> list[str]:
    """Revision 0002's definitions of the three functions, to restore them on downgrade."""
    spec = importlib.util.spec_from_file_location("billing_0002", Path(__file__).with_name("0002_ledger.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [
        statement
        for statement in module.FUNCTIONS
        if any(f"CREATE FUNCTION {name}(" in statement for name in OLD_SIGNATURES)
    ]


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event_outbox")),
    )
    for name, arguments in OLD_SIGNATURES.items():
        op.execute(f"DROP FUNCTION {name}({arguments})")
    for statement in FUNCTIONS:
        op.execute(statement)


def downgrade() -> None:
    for name, arguments in OLD_SIGNATURES.items():
        op.execute(f"DROP FUNCTION {name}({arguments}, uuid)")
    op.execute("DROP FUNCTION billing_event(uuid, text, timestamptz, json)")
    for statement in _previous_functions():
        op.execute(statement)
    op.drop_table("event_outbox")
