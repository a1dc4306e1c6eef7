"""Charges in batches: many units in one statement, one transaction and one commit (group commit).

``billing_charge_batch`` takes the charges as parallel arrays and runs ``billing_charge`` (revision
0003, unchanged) for each, in a block of its own: a charge that cannot be paid or whose key was
used with other terms rolls back alone and is reported, the others stand. Each charge keeps
exactly the single call's meaning (same key rules, same entries, same event); what is shared is
the round trip and the commit, the cost that dominated a charge on PostgreSQL's side.

Charges are taken in the order of their viewers' ids (then keys), so two batches that debit the
same wallets lock them in the same order and cannot deadlock. A batch holds at most 50 charges:
each paid charge is a subtransaction with its own xid, and PostgreSQL caches 64 of them per
transaction before every other snapshot has to look them up in pg_subtrans.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "text[], bytea[], uuid[], uuid[], uuid[], uuid[], integer[], bigint[], integer, text, uuid[]"

FUNCTION = """
CREATE FUNCTION billing_charge_batch(
  p_keys text[], p_request_hashes bytea[], p_viewers uuid[], p_creators uuid[], p_videos uuid[],
  p_sessions uuid[], p_units integer[], p_amounts bigint[], p_fee_bps integer, p_currency text,
  p_events uuid[]
) RETURNS TABLE (
  item integer, outcome text, transaction_id uuid, amount bigint, platform_fee bigint,
  balance bigint, created_at timestamptz, replayed boolean
)
LANGUAGE plpgsql AS $$
DECLARE
  i integer;
  r record;
  v_detail text;
BEGIN
  IF coalesce(cardinality(p_keys), 0) > 50 THEN
    RAISE EXCEPTION 'a charge batch holds at most 50 charges' USING ERRCODE = '22023';
  END IF;
  FOR i IN
    SELECT u.ord::integer FROM unnest(p_viewers, p_keys) WITH ORDINALITY AS u(viewer, key, ord)
     ORDER BY u.viewer, u.key
  LOOP
    item := i;
    BEGIN
      SELECT * INTO r FROM billing_charge(
        p_keys[i], p_request_hashes[i], p_viewers[i], p_creators[i], p_videos[i], p_sessions[i],
        p_units[i], p_amounts[i], p_fee_bps, p_currency, p_events[i]);
      outcome := 'charged';
      transaction_id := r.transaction_id;
      amount := r.amount;
      platform_fee := r.platform_fee;
      balance := r.balance;
      created_at := r.created_at;
      replayed := r.replayed;
    EXCEPTION
      WHEN SQLSTATE 'SB402' THEN
        GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
        outcome := 'insufficient_funds';
        transaction_id := NULL; amount := p_amounts[i]; platform_fee := NULL;
        balance := v_detail::bigint; created_at := NULL; replayed := false;
      WHEN SQLSTATE 'SB422' THEN
        outcome := 'idempotency_key_reused';
        transaction_id := NULL; amount := p_amounts[i]; platform_fee := NULL;
        balance := NULL; created_at := NULL; replayed := false;
    END;
    RETURN NEXT;
  END LOOP;
END $$
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION billing_charge_batch({SIGNATURE})")
