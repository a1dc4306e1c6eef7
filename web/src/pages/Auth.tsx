import { useState, type FormEvent } from "react";
import { Link, Navigate, useNavigate, useSearchParams } from "react-router";
import { useAuth } from "../auth";
import { ErrorNote, Field } from "../components/ui";
import { useAction, useTitle } from "../hooks";

/** Only same-site paths are followed after login (no open redirect). */
function safeNext(next: string | null): string {
  return next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

export function LoginPage() {
  useTitle("Log in");
  const { user, login } = useAuth();
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const next = safeNext(params.get("next"));
  const { run, pending, error } = useAction(async () => {
    await login(email, password);
    navigate(next, { replace: true });
  });
  if (user) return <Navigate to={next} replace />;

  function submit(event: FormEvent) {
    event.preventDefault();
    void run();
  }
  return (
    <section className="narrow">
      <h1>Log in</h1>
      <form onSubmit={submit} className="stack">
        <Field label="Email" type="email" autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} required />
        <Field
          label="Password"
          type="password"
          autoComplete="current-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          required
        />
        <ErrorNote error={error} />
        <button type="submit" className="primary" disabled={pending}>
          {pending ? "Logging in…" : "Log in"}
        </button>
      </form>
      <p>
        New here? <Link to={`/signup?next=${encodeURIComponent(next)}`}>Create an account</Link>
      </p>
    </section>
  );
}

export function SignupPage() {
  useTitle("Sign up");
  const { user, register } = useAuth();
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const next = safeNext(params.get("next"));
  const { run, pending, error } = useAction(async () => {
    await register(email, password, name);
    navigate(next, { replace: true });
  });
  if (user) return <Navigate to={next} replace />;

  function submit(event: FormEvent) {
    event.preventDefault();
    void run();
  }
  return (
    <section className="narrow">
      <h1>Create your account</h1>
      <p className="muted">Watch anything and pay only for the minutes you watch.</p>
      <form onSubmit={submit} className="stack">
        <Field label="Display name" autoComplete="nickname" value={name} onChange={(e) => setName(e.target.value)} required maxLength={80} />
        <Field label="Email" type="email" autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} required />
        <Field
          label="Password"
          type="password"
          autoComplete="new-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          hint="At least 10 characters; a few unrelated words make a strong one."
          required
        />
        <ErrorNote error={error} />
        <button type="submit" className="primary" disabled={pending}>
          {pending ? "Creating your account…" : "Sign up"}
        </button>
      </form>
      <p>
        Already have an account? <Link to={`/login?next=${encodeURIComponent(next)}`}>Log in</Link>
      </p>
    </section>
  );
}
