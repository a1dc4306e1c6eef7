import { useState } from "react";
import { Link } from "react-router";
import { api } from "../api";
import { TopUpForm } from "../components/TopUpForm";
import { ErrorNote, Loading, Stat } from "../components/ui";
import { dateTime, minutes, money } from "../format";
import { useAction, useApi, useTitle } from "../hooks";
import type { Page, ViewerStats, Wallet, WalletTransaction } from "../types";

const KINDS: Record<string, string> = {
  topup: "Top-up",
  charge: "Watching",
  refund: "Refund",
  earning: "Earnings",
};

export function WalletPage() {
  useTitle("Wallet");
  const wallet = useApi((signal) => api<Wallet>("GET", "/wallet", { signal }), []);
  const stats = useApi((signal) => api<ViewerStats>("GET", "/analytics/me", { signal }), []);
  const [rows, setRows] = useState<WalletTransaction[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const first = useApi(
    async (signal) => {
      const page = await api<Page<WalletTransaction>>("GET", "/wallet/transactions", { query: { limit: 20 }, signal });
      setRows(page.items);
      setCursor(page.next_cursor);
      return page;
    },
    [],
  );
  const more = useAction(async () => {
    const page = await api<Page<WalletTransaction>>("GET", "/wallet/transactions", { query: { limit: 20, cursor } });
    setRows((current) => [...(current ?? []), ...page.items]);
    setCursor(page.next_cursor);
  });
  const currency = wallet.data?.currency ?? "USD";

  return (
    <section>
      <h1>Wallet</h1>
      <div className="stats">
        <Stat label="Balance" value={wallet.data ? <span data-testid="wallet-balance">{money(wallet.data.balance, currency)}</span> : "…"} />
        {stats.data && <Stat label="Spent on watching" value={money(stats.data.spent, currency)} />}
        {stats.data && <Stat label="Minutes watched" value={minutes(stats.data.watch_minutes)} />}
      </div>
      <ErrorNote error={wallet.error} />
      <div className="columns">
        <section aria-labelledby="topup-heading" className="panel">
          <h2 id="topup-heading">Top up</h2>
          <TopUpForm
            currency={currency}
            onDone={(topUp) => {
              wallet.setData({ balance: topUp.balance, currency: topUp.currency });
              setNotice(`Added ${money(topUp.amount, topUp.currency)}. Your balance is ${money(topUp.balance, topUp.currency)}.`);
              first.reload();
            }}
          />
          {notice && (
            <p className="success" role="status">
              {notice}
            </p>
          )}
        </section>
        <section aria-labelledby="tx-heading" className="panel grow">
          <h2 id="tx-heading">Transactions</h2>
          <ErrorNote error={first.error} />
          {rows === null ? (
            <Loading />
          ) : rows.length === 0 ? (
            <p className="muted">No transactions yet.</p>
          ) : (
            <div className="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th scope="col">When</th>
                    <th scope="col">What</th>
                    <th scope="col" className="num">
                      Amount
                    </th>
                    <th scope="col" className="num">
                      Balance
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {rows.map((row) => (
                    <tr key={row.id}>
                      <td>{dateTime(row.created_at)}</td>
                      <td>
                        {KINDS[row.kind] ?? row.kind}
                        {row.video_id && (
                          <>
                            {" "}
                            · <Link to={`/videos/${row.video_id}`}>video</Link>
                            {row.unit !== null && <span className="muted"> (minute {row.unit + 1})</span>}
                          </>
                        )}
                      </td>
                      <td className={row.amount < 0 ? "num negative" : "num positive"}>{money(row.amount, row.currency)}</td>
                      <td className="num">{money(row.balance_after, row.currency)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          <ErrorNote error={more.error} />
          {cursor && (
            <button type="button" onClick={() => void more.run()} disabled={more.pending}>
              {more.pending ? "Loading…" : "Show older transactions"}
            </button>
          )}
        </section>
      </div>
    </section>
  );
}
