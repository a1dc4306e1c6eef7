// API errors (RFC 9457 problem+json with a stable `code`) in words a person can act on.

export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  code?: string;
  detail?: string;
  errors?: { loc?: (string | number)[]; msg?: string; type?: string }[];
  request_id?: string;
}

const PLAIN: Record<string, string> = {
  network_error: "We couldn't reach Streamify. Check your connection and try again.",
  invalid_credentials: "That email and password don't match an account.",
  email_taken: "An account with that email already exists. Try logging in instead.",
  channel_name_taken: "Another channel already has that name. Choose a different one.",
  own_channel: "You can't subscribe to your own channel.",
  amount_out_of_range: "Top-ups must be between $1.00 and $1,000.00.",
  invalid_email: "That doesn't look like an email address.",
  not_owner: "Only the video's creator can do that.",
  rate_limited: "Too many attempts in a short time. Wait a moment and try again.",
  account_locked: "Too many failed logins for this account. Wait a few minutes and try again.",
  token_expired: "Your session has expired. Please log in again.",
  not_authenticated: "Please log in first.",
  refresh_token_reused: "You were signed out for your safety. Please log in again.",
  insufficient_funds: "Your wallet doesn't have enough money for the next minute. Top up to keep watching.",
  payment_declined: "Your card was declined. Try another card.",
  payment_required: "Your wallet ran out. Top up to keep watching.",
  video_not_ready: "This video isn't ready to play yet.",
  video_not_found: "We couldn't find that video. It may have been removed or made private.",
  too_many_sessions: "You're already watching on too many screens. Close one and try again.",
  billing_unavailable: "Payments are briefly unavailable. Try again in a moment.",
  session_ended: "This viewing session has ended.",
  not_a_creator: "Only creators can see this. Start your channel first.",
  forbidden: "You're not allowed to do that.",
  channel_exists: "You already have a channel.",
  idempotency_key_reused: "That payment was already sent with different details. Please try again.",
  upload_too_large: "That file is too large to upload.",
  payload_too_large: "That file is too large to upload.",
  upstream_unavailable: "Part of Streamify is briefly unavailable. Try again in a moment.",
  upstream_timeout: "Streamify took too long to answer. Try again in a moment.",
};

function field(loc: (string | number)[] | undefined): string {
  const name = (loc ?? []).filter((part) => part !== "body" && part !== "query").join(".");
  return name.replace(/_/g, " ");
}

export function describeProblem(status: number, problem: Problem): string {
  if (problem.code === "validation_error" && problem.errors?.length) {
    return problem.errors
      .map((error) => {
        const name = field(error.loc);
        const message = (error.msg ?? "is not valid").replace(/^Value error, /, "");
        return name ? `${name[0].toUpperCase()}${name.slice(1)}: ${message}` : message;
      })
      .join(" ");
  }
  if (problem.code && PLAIN[problem.code]) return PLAIN[problem.code];
  if (problem.code === "weak_password") return `Choose a stronger password. ${problem.detail ?? ""}`.trim();
  if (problem.detail) return problem.detail;
  if (status === 404) return "We couldn't find that.";
  if (status === 403) return "You're not allowed to do that.";
  if (status === 401) return "Please log in first.";
  if (status >= 500) return "Something went wrong on our side. Try again in a moment.";
  return problem.title || "Something went wrong. Try again.";
}
