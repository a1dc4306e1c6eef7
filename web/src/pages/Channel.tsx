import { Link, useParams } from "react-router";
import { api } from "../api";
import { useAuth } from "../auth";
import { VideoGrid } from "../components/VideoCard";
import { ErrorNote, Loading, SignInPrompt } from "../components/ui";
import { count, date } from "../format";
import { useAction, useApi, useTitle } from "../hooks";
import type { Channel, Page, Video } from "../types";

interface SubscriptionState {
  subscribed: boolean;
  subscriber_count: number;
}

export function ChannelPage() {
  const { id = "" } = useParams();
  const { user } = useAuth();
  const channel = useApi((signal) => api<Channel>("GET", `/channels/${id}`, { signal }), [id]);
  const videos = useApi((signal) => api<Page<Video>>("GET", "/videos", { query: { creator: id, limit: 48 }, signal }), [id]);
  const following = useApi(
    async (signal) => {
      if (!user) return false;
      const page = await api<Page<{ channel: Channel }>>("GET", "/users/me/subscriptions", { query: { limit: 100 }, signal });
      return page.items.some((item) => item.channel.id === id);
    },
    [id, user?.id],
  );
  useTitle(channel.data?.channel_name ?? "Channel");
  const toggle = useAction(async () => {
    const state = await api<SubscriptionState>(following.data ? "DELETE" : "PUT", `/channels/${id}/subscription`);
    following.setData(state.subscribed);
    if (channel.data) channel.setData({ ...channel.data, subscriber_count: state.subscriber_count });
  });

  if (channel.error) return <ErrorNote error={channel.error} />;
  if (!channel.data) return <Loading />;
  const own = user?.id === channel.data.owner_id;
  return (
    <section>
      <div className="channel-head">
        <div>
          <h1>{channel.data.channel_name}</h1>
          <p className="muted">
            by {channel.data.owner_display_name} · {count(channel.data.subscriber_count, "subscriber")} · since{" "}
            {date(channel.data.created_at)}
          </p>
          {channel.data.description && <p>{channel.data.description}</p>}
        </div>
        {own ? (
          <Link to="/studio" className="button">
            Open studio
          </Link>
        ) : user ? (
          <button type="button" className={following.data ? "" : "primary"} onClick={() => void toggle.run()} disabled={toggle.pending || following.loading}>
            {following.data ? "Unsubscribe" : "Subscribe"}
          </button>
        ) : (
          <SignInPrompt what="to subscribe" />
        )}
      </div>
      <ErrorNote error={toggle.error} />
      <h2>Videos</h2>
      <ErrorNote error={videos.error} />
      {videos.data ? <VideoGrid videos={videos.data.items} empty="This channel has no videos yet." /> : <Loading />}
    </section>
  );
}

export function SubscriptionsPage() {
  useTitle("Subscriptions");
  const page = useApi(
    (signal) => api<Page<{ channel: Channel; subscribed_at: string }>>("GET", "/users/me/subscriptions", { query: { limit: 100 }, signal }),
    [],
  );
  return (
    <section>
      <h1>Subscriptions</h1>
      <ErrorNote error={page.error} />
      {!page.data ? (
        <Loading />
      ) : page.data.items.length === 0 ? (
        <p className="muted">You don't follow any channel yet. Subscribe from a channel's page.</p>
      ) : (
        <ul className="list">
          {page.data.items.map(({ channel }) => (
            <li key={channel.id}>
              <Link to={`/channels/${channel.id}`}>{channel.channel_name}</Link>{" "}
              <span className="muted">· {count(channel.subscriber_count, "subscriber")}</span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
