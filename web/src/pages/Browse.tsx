import { useSearchParams } from "react-router";
import { api } from "../api";
import { VideoGrid } from "../components/VideoCard";
import { ErrorNote, Loading } from "../components/ui";
import { useApi, useTitle } from "../hooks";
import type { Page, Video } from "../types";

function Shelf({ title, sort }: { title: string; sort: "newest" | "most_viewed" }) {
  const videos = useApi((signal) => api<Page<Video>>("GET", "/videos", { query: { sort, limit: 12 }, signal }), [sort]);
  return (
    <section aria-labelledby={`shelf-${sort}`}>
      <h2 id={`shelf-${sort}`}>{title}</h2>
      <ErrorNote error={videos.error} />
      {videos.data ? <VideoGrid videos={videos.data.items} empty="No videos yet." /> : !videos.error && <Loading />}
    </section>
  );
}

export function HomePage() {
  useTitle("");
  return (
    <>
      <h1 className="visually-hidden">Streamify</h1>
      <Shelf title="Newest" sort="newest" />
      <Shelf title="Popular" sort="most_viewed" />
    </>
  );
}

export function SearchPage() {
  const [params] = useSearchParams();
  const q = params.get("q") ?? "";
  useTitle(q ? `Search: ${q}` : "Search");
  const results = useApi(
    (signal) => (q ? api<Page<Video>>("GET", "/search", { query: { q, limit: 30 }, signal }) : Promise.resolve({ items: [], next_cursor: null })),
    [q],
  );
  return (
    <section>
      <h1>{q ? `Results for “${q}”` : "Search"}</h1>
      <ErrorNote error={results.error} />
      {results.loading ? <Loading what="Searching" /> : results.data && <VideoGrid videos={results.data.items} empty={q ? "No videos match. Try other words." : "Type something to search for."} />}
    </section>
  );
}

export function NotFoundPage() {
  useTitle("Not found");
  return (
    <section>
      <h1>Page not found</h1>
      <p>
        There's nothing here. <a href="/">Go to the home page</a>.
      </p>
    </section>
  );
}
