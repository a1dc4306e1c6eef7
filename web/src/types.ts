// The shapes of the public API's answers that the app reads (see docs/api.md).

export type VideoStatus = "awaiting_upload" | "uploading" | "processing" | "ready" | "failed";
export type Visibility = "public" | "unlisted" | "private";
export type Reaction = "like" | "dislike";

export interface Video {
  id: string;
  creator_id: string;
  title: string;
  description: string;
  tags: string[];
  visibility: Visibility;
  status: VideoStatus;
  progress: number | null;
  failure_reason: string | null;
  duration_s: number | null;
  renditions: { name: string; width: number; height: number; bandwidth: number }[];
  thumbnail_url: string | null;
  price_per_minute: number;
  currency: string;
  counters: { views: number; likes: number; dislikes: number; comments: number };
  created_at: string;
  published_at: string | null;
  my_reaction: Reaction | null;
}

export interface VideoCreated extends Video {
  upload_url: string;
  upload_metadata: Record<string, string>;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface Channel {
  id: string;
  channel_name: string;
  description: string;
  owner_id: string;
  owner_display_name: string;
  subscriber_count: number;
  created_at: string;
}

export interface Comment {
  id: string;
  author_id: string;
  /** The author's display name when they wrote it; null for comments from before names. */
  author_name: string | null;
  parent_id: string | null;
  body: string;
  reply_count: number;
  likes: number;
  created_at: string;
}

export type SessionStatus = "active" | "payment_required" | "ended";

export interface PlaybackSession {
  session_id: string;
  video_id: string;
  status: SessionStatus;
  master_url: string | null;
  heartbeat_interval_s: number;
  billing_unit_s: number;
  price_per_minute: number;
  currency: string;
  billed_minutes: number;
  charged_total: number;
  balance: number | null;
  watched_s: number;
}

export interface Heartbeat {
  status: SessionStatus;
  billed_minutes: number;
  charged_total: number;
  balance: number | null;
  currency: string;
  watched_s: number;
  next_heartbeat_s: number;
}

export interface HistoryItem {
  video_id: string;
  position_s: number;
  completed: boolean;
  watched_s: number;
  last_watched_at: string;
}

export interface Wallet {
  balance: number;
  currency: string;
}

export interface WalletTransaction {
  id: string;
  kind: string;
  amount: number;
  balance_after: number;
  currency: string;
  created_at: string;
  video_id: string | null;
  unit: number | null;
}

export interface Earnings {
  total: number;
  currency: string;
  videos: { video_id: string; amount: number; charges: number }[];
}

export interface Totals {
  sessions: number;
  views: number;
  unique_viewers: number;
  watch_minutes: number;
  revenue: number;
  avg_view_duration_s: number;
}

export interface Daily extends Totals {
  day: string;
}

export interface CreatorOverview {
  currency: string;
  totals: Totals;
  daily: Daily[];
  videos: { video_id: string; title: string | null; sessions: number; views: number; watch_minutes: number; revenue: number }[];
}

export interface VideoAnalytics {
  video_id: string;
  title: string | null;
  duration_s: number | null;
  currency: string;
  totals: Totals;
  daily: Daily[];
  retention: { percent: number; share: number }[];
}

export interface PlatformTotals {
  active_viewers: number;
  sessions: number;
  watch_minutes: number;
  revenue_gross: number;
  platform_fee: number;
  uploads: number;
  transcode_failures: number;
}

export interface PlatformStats {
  currency: string;
  totals: PlatformTotals;
  daily: (PlatformTotals & { day: string })[];
}

export interface ViewerStats {
  sessions: number;
  watch_minutes: number;
  spent: number;
  videos_finished: number;
  currency: string;
}
