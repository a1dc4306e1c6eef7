"""Charges lock the viewer's wallet before their key.

``billing_charge`` inserted the transaction (taking its key in the unique index) and only then
debited the wallet. Alone that was fine; with batches (0004), which hold a wallet across several
keys, a single call holding one of those keys and waiting for the wallet, and the batch holding
the wallet and waiting for that key, deadlocked (PostgreSQL broke it by failing one of them). Now
every charge locks the wallet first (``SELECT ... FOR UPDATE``), then decides the key exactly as
before: the same results, one lock order. A concurrent duplicate now waits on the wallet, then
finds the first charge's row and answers it again, as it did.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a revision must keep meaning what it meant when it was written.
FUNCTION = """
CREATE OR REPLACE FUNCTION billing_charge(
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
  -- The viewer's wallet first, then the key: every charge takes its locks in this order, so a
  -- batch (which holds a wallet across several keys) and a single call with one of those keys
  -- cannot each wait for the other.
  PERFORM 1 FROM accounts a
   WHERE a.kind = 'wallet' AND a.owner_id = p_viewer AND a.currency = p_currency
     FOR UPDATE;

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
"""


def _previous() -> str:
    """Revision 0003's billing_charge, to restore on downgrade."""
    path = Path(__file__).with_name("0003_event_outbox.py")
    spec = importlib.util.spec_from_file_location("billing_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (statement,) = [s for s in module.FUNCTIONS if "CREATE FUNCTION billing_charge(" in s]
    return str(statement).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(_previous())
