// Money is integer minor units (cents) with a currency; durations are seconds.

export function money(cents: number | null | undefined, currency = "USD"): string {
  if (cents === null || cents === undefined) return "–";
  return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
}

export function pricePerMinute(cents: number, currency = "USD"): string {
  return cents === 0 ? "Free" : `${money(cents, currency)} per minute`;
}

/** Dollars typed in a form ("2.5") to cents (250); NaN when it is not an amount. */
export function toCents(text: string): number {
  const trimmed = text.trim();
  if (!/^\d+(\.\d{0,2})?$/.test(trimmed)) return Number.NaN;
  return Math.round(Number(trimmed) * 100);
}

export function clock(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const whole = Math.max(0, Math.floor(seconds));
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = String(whole % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function count(n: number, one: string, many = `${one}s`): string {
  return `${new Intl.NumberFormat().format(n)} ${n === 1 ? one : many}`;
}

export function date(iso: string): string {
  return new Date(iso).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

export function dateTime(iso: string): string {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function minutes(value: number): string {
  return new Intl.NumberFormat(undefined, { maximumFractionDigits: Math.abs(value) < 1 ? 2 : 1 }).format(value);
}
