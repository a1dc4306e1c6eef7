import { useId, type InputHTMLAttributes, type ReactNode, type SelectHTMLAttributes, type TextareaHTMLAttributes } from "react";
import { Link } from "react-router";
import type { ApiError } from "../api";

/** An error from the API (or a form) in plain words, announced to screen readers. */
export function ErrorNote({ error }: { error: ApiError | string | null | undefined }) {
  if (!error) return null;
  return (
    <p className="error" role="alert">
      {typeof error === "string" ? error : error.message}
    </p>
  );
}

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <p className="muted" role="status">
      {what}…
    </p>
  );
}

interface FieldProps {
  label: string;
  hint?: ReactNode;
}

/** A visible label and an optional hint, both tied to the control that ``children`` renders. */
function Labelled({ label, hint, children }: FieldProps & { children: (id: string, describedBy?: string) => ReactNode }) {
  const id = useId();
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {children(id, hint ? `${id}-hint` : undefined)}
      {hint && (
        <small id={`${id}-hint`} className="muted">
          {hint}
        </small>
      )}
    </div>
  );
}

export function Field({ label, hint, ...input }: FieldProps & InputHTMLAttributes<HTMLInputElement>) {
  return (
    <Labelled label={label} hint={hint}>
      {(id, describedBy) => <input id={id} aria-describedby={describedBy} {...input} />}
    </Labelled>
  );
}

export function TextArea({ label, hint, ...input }: FieldProps & TextareaHTMLAttributes<HTMLTextAreaElement>) {
  return (
    <Labelled label={label} hint={hint}>
      {(id, describedBy) => <textarea id={id} aria-describedby={describedBy} {...input} />}
    </Labelled>
  );
}

export function Select({
  label,
  hint,
  children,
  ...input
}: FieldProps & SelectHTMLAttributes<HTMLSelectElement> & { children: ReactNode }) {
  return (
    <Labelled label={label} hint={hint}>
      {(id, describedBy) => (
        <select id={id} aria-describedby={describedBy} {...input}>
          {children}
        </select>
      )}
    </Labelled>
  );
}

export function Stat({ label, value }: { label: string; value: ReactNode }) {
  return (
    <div className="stat">
      <span className="stat-label">{label}</span>
      <strong className="stat-value">{value}</strong>
    </div>
  );
}

export function SignInPrompt({ what }: { what: string }) {
  return (
    <p>
      <Link to={`/login?next=${encodeURIComponent(location.pathname + location.search)}`}>Log in</Link> or{" "}
      <Link to="/signup">sign up</Link> {what}.
    </p>
  );
}
