// The public API (SPEC §3) through the gateway, the way a mobile client would use it.
//
// The access token lives only in memory. The refresh token is an HttpOnly cookie that scripts
// cannot read, scoped to /api/v1/auth; a refresh is sent with that cookie shortly before the
// access token expires, and once more when an answer says the token has expired. Refreshes are
// serialized across tabs (Web Locks), because presenting a refresh token that another tab has
// just spent would revoke the whole session.

import { describeProblem, type Problem } from "./problems";

export const API = "/api/v1";

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly problem: Problem;

  constructor(status: number, problem: Problem) {
    super(describeProblem(status, problem));
    this.status = status;
    this.code = problem.code ?? `http_${status}`;
    this.problem = problem;
  }
}

type TokenListener = (token: string | null) => void;

// Not a secret: only whether this browser has signed in, so a visitor who never has is not sent
// to /auth/refresh (and a 401) on every page load.
const SIGNED_IN = "streamify.signed-in";

let accessToken: string | null = null;
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let inFlight: Promise<boolean> | null = null;
const listeners = new Set<TokenListener>();

export function currentToken(): string | null {
  return accessToken;
}

/** Called with the new token (or null when signed out) whenever it changes. */
export function onTokenChange(listener: TokenListener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function setSession(token: string | null, expiresInS?: number): void {
  accessToken = token;
  try {
    if (token) localStorage.setItem(SIGNED_IN, "1");
    else localStorage.removeItem(SIGNED_IN);
  } catch {
    // Storage disabled: every load tries the cookie.
  }
  clearTimeout(refreshTimer);
  if (token && expiresInS) {
    // A minute early (or at two-thirds of a short lifetime), so requests never carry a stale one.
    const lead = Math.min(60, expiresInS / 3);
    refreshTimer = setTimeout(() => void refreshSession(), (expiresInS - lead) * 1000);
  }
  listeners.forEach((listener) => listener(token));
}

async function withRefreshLock<T>(work: () => Promise<T>): Promise<T> {
  if (typeof navigator !== "undefined" && navigator.locks) {
    return navigator.locks.request("streamify-refresh", work);
  }
  return work();
}

/** Whether this browser may hold a refresh cookie worth trying. */
export function maybeSignedIn(): boolean {
  try {
    return localStorage.getItem(SIGNED_IN) !== null;
  } catch {
    return true;
  }
}

/** Trade the refresh cookie for a new token pair; false when there is no (valid) session. */
export function refreshSession(): Promise<boolean> {
  if (!inFlight) {
    inFlight = withRefreshLock(async () => {
      const answer = await fetch(`${API}/auth/refresh`, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      }).catch(() => null);
      if (!answer || !answer.ok) {
        setSession(null);
        return false;
      }
      const pair = (await answer.json()) as { access_token: string; expires_in: number };
      setSession(pair.access_token, pair.expires_in);
      return true;
    }).finally(() => {
      inFlight = null;
    });
  }
  return inFlight;
}

export interface RequestOptions {
  json?: unknown;
  query?: Record<string, string | number | undefined | null>;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  keepalive?: boolean;
}

function url(path: string, query?: RequestOptions["query"]): string {
  const base = path.startsWith("/api/") || path.startsWith("/.well-known/") ? path : `${API}${path}`;
  if (!query) return base;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${base}?${text}` : base;
}

async function send(method: string, path: string, options: RequestOptions): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json", ...options.headers };
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  let body: BodyInit | undefined;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  return fetch(url(path, options.query), {
    method,
    headers,
    body,
    credentials: "same-origin",
    signal: options.signal,
    keepalive: options.keepalive,
  });
}

async function problemOf(answer: Response): Promise<Problem> {
  try {
    const parsed = (await answer.json()) as Problem;
    if (parsed && typeof parsed === "object") return parsed;
  } catch {
    // Not JSON: a proxy's error page, say.
  }
  return { title: answer.statusText };
}

/** One API call; the parsed JSON answer, or an ApiError with words a person can read. */
export async function api<T = unknown>(
  method: string,
  path: string,
  options: RequestOptions = {},
): Promise<T> {
  let answer: Response;
  try {
    answer = await send(method, path, options);
    if (answer.status === 401 && accessToken) {
      // Expired (or revoked) between two refreshes: renew once and try again.
      if (await refreshSession()) answer = await send(method, path, options);
    }
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError(0, { code: "network_error" });
  }
  if (!answer.ok) throw new ApiError(answer.status, await problemOf(answer));
  if (answer.status === 204) return undefined as T;
  const type = answer.headers.get("Content-Type") ?? "";
  return (type.includes("json") ? await answer.json() : await answer.text()) as T;
}

/** A fresh idempotency key for one money-moving attempt (retries of it reuse the key). */
export function idempotencyKey(): string {
  return crypto.randomUUID();
}
