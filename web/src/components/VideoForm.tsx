import { useState, type FormEvent, type ReactNode } from "react";
import { toCents } from "../format";
import type { Visibility } from "../types";
import { ErrorNote, Field, Select, TextArea } from "./ui";

export interface VideoFields {
  title: string;
  description: string;
  tags: string[];
  visibility: Visibility;
  price_per_minute: number;
}

export const NEW_VIDEO: VideoFields = { title: "", description: "", tags: [], visibility: "public", price_per_minute: 0 };

/** Title, description, tags, visibility and price: the same form for a new video and an edit. */
export function VideoForm({
  initial,
  submitLabel,
  pending,
  error,
  onSubmit,
  children,
}: {
  initial: VideoFields;
  submitLabel: string;
  pending: boolean;
  error: string | null;
  onSubmit: (fields: VideoFields) => void;
  children?: ReactNode;
}) {
  const [title, setTitle] = useState(initial.title);
  const [description, setDescription] = useState(initial.description);
  const [tags, setTags] = useState(initial.tags.join(", "));
  const [visibility, setVisibility] = useState<Visibility>(initial.visibility);
  const [price, setPrice] = useState((initial.price_per_minute / 100).toFixed(2));
  const [problem, setProblem] = useState<string | null>(null);

  function submit(event: FormEvent) {
    event.preventDefault();
    const cents = toCents(price);
    if (!Number.isFinite(cents) || cents > 10000) {
      setProblem("Price per minute must be an amount between 0.00 (free) and 100.00.");
      return;
    }
    setProblem(null);
    onSubmit({
      title: title.trim(),
      description,
      tags: tags
        .split(",")
        .map((tag) => tag.trim())
        .filter(Boolean),
      visibility,
      price_per_minute: cents,
    });
  }

  return (
    <form onSubmit={submit} className="stack">
      <Field label="Title" value={title} onChange={(e) => setTitle(e.target.value)} required maxLength={200} />
      <TextArea label="Description" value={description} onChange={(e) => setDescription(e.target.value)} rows={4} maxLength={5000} />
      <Field label="Tags" value={tags} onChange={(e) => setTags(e.target.value)} hint="Separate tags with commas." />
      <Select label="Visibility" value={visibility} onChange={(e) => setVisibility(e.target.value as Visibility)}>
        <option value="public">Public: listed and searchable</option>
        <option value="unlisted">Unlisted: anyone with the link</option>
        <option value="private">Private: only you</option>
      </Select>
      <Field
        label="Price per minute"
        inputMode="decimal"
        value={price}
        onChange={(e) => setPrice(e.target.value)}
        hint="0.00 makes it free. You keep 80% of what viewers pay."
        required
      />
      {children}
      <ErrorNote error={problem ?? error} />
      <button type="submit" className="primary" disabled={pending}>
        {submitLabel}
      </button>
    </form>
  );
}
