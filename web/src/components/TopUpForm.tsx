import { useState, type FormEvent } from "react";
import { api, idempotencyKey } from "../api";
import { money, toCents } from "../format";
import { useAction } from "../hooks";
import { ErrorNote, Field, Select } from "./ui";

export interface TopUp {
  transaction_id: string;
  amount: number;
  balance: number;
  currency: string;
}

const PRESETS = [500, 1000, 2000, 5000];

/** Add money to the wallet with the sandbox payment provider. One idempotency key per attempt,
 * so a double click or a retry after a lost answer never pays twice. */
export function TopUpForm({ onDone, currency = "USD" }: { onDone: (topUp: TopUp) => void; currency?: string }) {
  const [amount, setAmount] = useState("10.00");
  const [card, setCard] = useState("test_card");
  const [key, setKey] = useState(idempotencyKey);
  const { run, pending, error, setError } = useAction(async (cents: number, method: string) => {
    const topUp = await api<TopUp>("POST", "/wallet/topups", {
      json: { amount: cents, payment_method: method },
      headers: { "Idempotency-Key": key },
    });
    setKey(idempotencyKey());
    onDone(topUp);
    return topUp;
  });

  function submit(event: FormEvent) {
    event.preventDefault();
    const cents = toCents(amount);
    if (!Number.isFinite(cents) || cents < 100 || cents > 100000) {
      setError("Enter an amount between 1.00 and 1000.00.");
      return;
    }
    void run(cents, card);
  }

  return (
    <form onSubmit={submit} className="stack" aria-label="Top up">
      <div className="presets" role="group" aria-label="Suggested top-ups">
        {PRESETS.map((cents) => (
          <button
            type="button"
            key={cents}
            className={toCents(amount) === cents ? "chip selected" : "chip"}
            aria-pressed={toCents(amount) === cents}
            onClick={() => setAmount((cents / 100).toFixed(2))}
          >
            {money(cents, currency)}
          </button>
        ))}
      </div>
      <Field
        label="Amount"
        inputMode="decimal"
        value={amount}
        onChange={(event) => {
          setAmount(event.target.value);
          setKey(idempotencyKey());
        }}
        hint="Between 1.00 and 1000.00."
        required
      />
      <Select
        label="Card"
        value={card}
        onChange={(event) => {
          setCard(event.target.value);
          setKey(idempotencyKey());
        }}
        hint="Sandbox cards: nothing is really charged."
      >
        <option value="test_card">Test card (always succeeds)</option>
        <option value="test_card_declined">Test card (always declined)</option>
      </Select>
      <ErrorNote error={error} />
      <button type="submit" className="primary" disabled={pending}>
        {pending ? "Paying…" : `Add ${Number.isFinite(toCents(amount)) ? money(toCents(amount), currency) : "money"}`}
      </button>
    </form>
  );
}
