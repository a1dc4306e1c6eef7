import { useState, type FormEvent } from "react";
import { Link, useParams } from "react-router";
import { api } from "../api";
import { useAuth } from "../auth";
import { Player } from "../components/Player";
import { ErrorNote, Loading, SignInPrompt, TextArea } from "../components/ui";
import { count, date, dateTime, pricePerMinute } from "../format";
import { useAction, useApi, useTitle } from "../hooks";
import type { Channel, Comment, Page, Reaction, Video } from "../types";

function Reactions({ video }: { video: Video }) {
  const { user } = useAuth();
  const [state, setState] = useState({ reaction: video.my_reaction, likes: video.counters.likes, dislikes: video.counters.dislikes });
  const react = useAction(async (kind: Reaction) => {
    const path = `/videos/${video.id}/reaction`;
    // Pressing the reaction you already gave takes it back.
    setState(state.reaction === kind ? await api<typeof state>("DELETE", path) : await api<typeof state>("PUT", path, { json: { kind } }));
  });
  return (
    <div className="row" role="group" aria-label="Reactions">
      <button type="button" aria-pressed={state.reaction === "like"} disabled={!user || react.pending} onClick={() => void react.run("like")}>
        Like <span className="count">{state.likes}</span>
      </button>
      <button type="button" aria-pressed={state.reaction === "dislike"} disabled={!user || react.pending} onClick={() => void react.run("dislike")}>
        Dislike <span className="count">{state.dislikes}</span>
      </button>
      <ErrorNote error={react.error} />
    </div>
  );
}

function Comments({ video }: { video: Video }) {
  const { user } = useAuth();
  const comments = useApi((signal) => api<Page<Comment>>("GET", `/videos/${video.id}/comments`, { query: { limit: 50 }, signal }), [video.id]);
  const [body, setBody] = useState("");
  const post = useAction(async () => {
    const comment = await api<Comment>("POST", `/videos/${video.id}/comments`, { json: { body } });
    comments.setData({ items: [comment, ...(comments.data?.items ?? [])], next_cursor: comments.data?.next_cursor ?? null });
    setBody("");
  });
  function submit(event: FormEvent) {
    event.preventDefault();
    if (body.trim()) void post.run();
  }
  const items = (comments.data?.items ?? []).filter((comment) => comment.parent_id === null);
  return (
    <section aria-labelledby="comments-heading" className="comments">
      <h2 id="comments-heading">Comments</h2>
      {user ? (
        <form onSubmit={submit} className="stack">
          <TextArea label="Add a comment" value={body} onChange={(e) => setBody(e.target.value)} maxLength={5000} rows={3} required />
          <ErrorNote error={post.error} />
          <button type="submit" disabled={post.pending || !body.trim()}>
            {post.pending ? "Posting…" : "Post comment"}
          </button>
        </form>
      ) : (
        <SignInPrompt what="to comment" />
      )}
      <ErrorNote error={comments.error} />
      {!comments.data ? (
        <Loading />
      ) : items.length === 0 ? (
        <p className="muted">No comments yet.</p>
      ) : (
        <ul className="list comment-list">
          {items.map((comment) => (
            <li key={comment.id}>
              <p className="muted small">
                <span className="comment-author">{comment.author_name ?? "A viewer"}</span>
                {comment.author_id === user?.id ? " (you)" : comment.author_id === video.creator_id ? " (creator)" : ""} ·{" "}
                {dateTime(comment.created_at)}
              </p>
              <p className="comment-body">{comment.body}</p>
              {comment.reply_count > 0 && <p className="muted small">{count(comment.reply_count, "reply", "replies")}</p>}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

export function WatchPage() {
  const { id = "" } = useParams();
  const { user } = useAuth();
  const video = useApi((signal) => api<Video>("GET", `/videos/${id}`, { signal }), [id, user?.id]);
  const channel = useApi(
    (signal) => (video.data ? api<Channel>("GET", `/channels/${video.data.creator_id}`, { signal }) : Promise.resolve(null)),
    [video.data?.creator_id],
  );
  useTitle(video.data?.title ?? "Video");

  if (video.error) return <ErrorNote error={video.error} />;
  if (!video.data) return <Loading />;
  const data = video.data;
  return (
    <article className="watch">
      {data.status !== "ready" ? (
        <div className="screen placeholder">
          <p>{data.status === "failed" ? `This video couldn't be processed: ${data.failure_reason ?? "unknown reason"}` : "This video is still being prepared."}</p>
        </div>
      ) : user ? (
        <Player key={data.id} video={data} ownVideo={data.creator_id === user.id} />
      ) : (
        <div className="screen placeholder">
          <p className="price-tag">{pricePerMinute(data.price_per_minute, data.currency)}</p>
          <SignInPrompt what="to watch" />
        </div>
      )}
      <h1>{data.title}</h1>
      <div className="row spread">
        <p className="muted">
          {channel.data ? <Link to={`/channels/${channel.data.id}`}>{channel.data.channel_name}</Link> : "…"} · {count(data.counters.views, "view")} ·{" "}
          {date(data.published_at ?? data.created_at)} · <span>{pricePerMinute(data.price_per_minute, data.currency)}</span>
        </p>
        <Reactions video={data} />
      </div>
      {data.description && <p className="description">{data.description}</p>}
      {data.tags.length > 0 && (
        <ul className="tags" aria-label="Tags">
          {data.tags.map((tag) => (
            <li key={tag}>
              <Link to={`/search?q=${encodeURIComponent(tag)}`}>#{tag}</Link>
            </li>
          ))}
        </ul>
      )}
      <Comments video={data} />
    </article>
  );
}
