// The watch page's player: a playback session, hls.js, heartbeats and the live meter.
//
// The session's master URL carries a credential bound to the session, so hls.js fetches
// playlists and segments without the bearer token. A heartbeat goes out at the interval the
// server asks for; its answer drives the meter and the session's state. When a minute cannot be
// paid the server says `payment_required` (and segments answer 402): playback pauses and the
// top-up dialog opens; after paying, one heartbeat at once lets the server charge the minute
// and the same session carries on from where it stopped.

import Hls, { type ErrorData } from "hls.js";
import { useCallback, useEffect, useRef, useState } from "react";
import { api, ApiError, currentToken, API } from "../api";
import { clock, money, pricePerMinute } from "../format";
import type { Heartbeat, HistoryItem, Page, PlaybackSession, SessionStatus, Video, Wallet } from "../types";
import { Dialog } from "./Dialog";
import { TopUpForm } from "./TopUpForm";
import { ErrorNote } from "./ui";

type Phase = "idle" | "starting" | "watching" | "payment_required" | "ended";

interface Meter {
  status: SessionStatus;
  billed_minutes: number;
  charged_total: number;
  balance: number | null;
  currency: string;
}

interface Level {
  index: number;
  label: string;
}

function endSession(sessionId: string): void {
  const token = currentToken();
  // keepalive: the request outlives the page when the viewer navigates away or closes the tab.
  void fetch(`${API}/playback/sessions/${sessionId}/end`, {
    method: "POST",
    keepalive: true,
    credentials: "same-origin",
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  }).catch(() => undefined);
}

export function Player({ video, ownVideo }: { video: Video; ownVideo: boolean }) {
  const videoRef = useRef<HTMLVideoElement>(null);
  const hlsRef = useRef<Hls | null>(null);
  const sessionRef = useRef<PlaybackSession | null>(null);
  const timerRef = useRef<ReturnType<typeof setTimeout>>(undefined);
  const bufferingRef = useRef(false);
  const fatalRef = useRef(false);
  const phaseRef = useRef<Phase>("idle");
  const startFrom = useRef(0);

  const [phase, setPhaseState] = useState<Phase>("idle");
  const [meter, setMeter] = useState<Meter | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [topUpReason, setTopUpReason] = useState<"start" | "continue" | null>(null);
  const [levels, setLevels] = useState<Level[]>([]);
  const [level, setLevel] = useState(-1);
  const [resumeAt, setResumeAt] = useState<number | null>(null);
  const [balance, setBalance] = useState<Wallet | null>(null);

  const setPhase = useCallback((next: Phase) => {
    phaseRef.current = next;
    setPhaseState(next);
  }, []);

  // Before playing: where you stopped last time, and what you have to spend.
  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    api<Page<HistoryItem>>("GET", "/users/me/history", { query: { limit: 100 }, signal })
      .then((page) => {
        const item = page.items.find((entry) => entry.video_id === video.id);
        const duration = video.duration_s ?? 0;
        if (item && !item.completed && item.position_s > 2 && (!duration || item.position_s < duration - 3)) {
          setResumeAt(item.position_s);
        }
      })
      .catch(() => undefined);
    api<Wallet>("GET", "/wallet", { signal })
      .then(setBalance)
      .catch(() => undefined);
    return () => controller.abort();
  }, [video.id, video.duration_s]);

  const stopHeartbeats = useCallback(() => clearTimeout(timerRef.current), []);

  const teardown = useCallback(() => {
    stopHeartbeats();
    hlsRef.current?.destroy();
    hlsRef.current = null;
  }, [stopHeartbeats]);

  // Leaving the page ends the session (so it stops counting against your concurrent sessions).
  useEffect(() => {
    const onHide = () => {
      if (sessionRef.current && phaseRef.current !== "ended") endSession(sessionRef.current.session_id);
    };
    window.addEventListener("pagehide", onHide);
    return () => {
      window.removeEventListener("pagehide", onHide);
      onHide();
      teardown();
    };
  }, [teardown]);

  const attach = useCallback((masterUrl: string, startAt: number) => {
    const element = videoRef.current;
    if (!element) return;
    hlsRef.current?.destroy();
    fatalRef.current = false;
    if (Hls.isSupported()) {
      const hls = new Hls({ startPosition: startAt, capLevelToPlayerSize: true });
      hlsRef.current = hls;
      hls.on(Hls.Events.MANIFEST_PARSED, (_event, data) => {
        setLevels(
          data.levels
            .map((entry, index) => ({ index, label: `${entry.height}p`, height: entry.height }))
            .sort((a, b) => b.height - a.height)
            .map(({ index, label }) => ({ index, label })),
        );
        element.play().catch(() => undefined);
      });
      hls.on(Hls.Events.ERROR, (_event, data: ErrorData) => {
        const status = data.response?.code;
        if (status === 402 || status === 410) {
          // The session stopped paying (or ended): the next heartbeat says which, right now.
          fatalRef.current = fatalRef.current || data.fatal;
          void beatRef.current();
          return;
        }
        if (data.fatal) {
          fatalRef.current = true;
          if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
          else setError("The video stopped loading. Check your connection and press play to retry.");
        }
      });
      hls.loadSource(masterUrl);
      hls.attachMedia(element);
    } else if (element.canPlayType("application/vnd.apple.mpegurl")) {
      // Safari and iOS play HLS natively.
      element.src = masterUrl;
      element.addEventListener("loadedmetadata", () => (element.currentTime = startAt), { once: true });
      element.play().catch(() => undefined);
    } else {
      setError("This browser can't play HLS video.");
    }
  }, []);

  const beat = useCallback(async () => {
    const session = sessionRef.current;
    const element = videoRef.current;
    if (!session || !element || phaseRef.current === "ended") return;
    stopHeartbeats();
    const state = element.paused || element.ended ? "paused" : bufferingRef.current ? "buffering" : "playing";
    const hls = hlsRef.current;
    const current = hls && hls.currentLevel >= 0 ? hls.levels[hls.currentLevel] : null;
    let next = session.heartbeat_interval_s;
    try {
      const answer = await api<Heartbeat>("POST", `/playback/sessions/${session.session_id}/heartbeat`, {
        json: { position_s: element.currentTime, state, rendition: current ? `${current.height}p` : null },
      });
      next = answer.next_heartbeat_s || next;
      setMeter(answer);
      if (answer.status === "payment_required") {
        element.pause();
        if (phaseRef.current !== "payment_required") {
          setPhase("payment_required");
          setTopUpReason("continue");
        }
      } else if (answer.status === "ended") {
        setPhase("ended");
        element.pause();
        teardown();
        return;
      } else if (phaseRef.current === "payment_required") {
        // Paid (here or in another tab): carry on where playback stopped.
        setPhase("watching");
        setTopUpReason(null);
        if (fatalRef.current || !hlsRef.current) attach(session.master_url ?? "", element.currentTime);
        else hlsRef.current.startLoad(element.currentTime);
        element.play().catch(() => undefined);
      }
    } catch (caught) {
      if (caught instanceof ApiError && (caught.status === 404 || caught.status === 410)) {
        setPhase("ended");
        teardown();
        return;
      }
      // A lost heartbeat is harmless (the next one reports the same position); keep going.
    }
    timerRef.current = setTimeout(() => void beatRef.current(), next * 1000);
  }, [attach, setPhase, stopHeartbeats, teardown]);
  const beatRef = useRef(beat);
  beatRef.current = beat;

  const start = useCallback(
    async (from: number) => {
      // Kept for a retry after a top-up made the first minute payable.
      startFrom.current = from;
      setError(null);
      setPhase("starting");
      try {
        const session = await api<PlaybackSession>("POST", "/playback/sessions", { json: { video_id: video.id } });
        sessionRef.current = session;
        setMeter(session);
        setPhase("watching");
        attach(session.master_url ?? "", from);
        timerRef.current = setTimeout(() => void beatRef.current(), session.heartbeat_interval_s * 1000);
      } catch (caught) {
        setPhase("idle");
        if (caught instanceof ApiError && caught.code === "insufficient_funds") {
          setTopUpReason("start");
          return;
        }
        setError(caught instanceof Error ? caught.message : "Couldn't start playback.");
      }
    },
    [attach, setPhase, video.id],
  );
  const currency = meter?.currency ?? video.currency;
  const free = video.price_per_minute === 0 || ownVideo;

  return (
    <div className="player">
      <div className="screen">
        <video
          ref={videoRef}
          controls={phase !== "idle" && phase !== "starting"}
          playsInline
          poster={video.thumbnail_url ?? undefined}
          aria-label={`Video: ${video.title}`}
          onWaiting={() => (bufferingRef.current = true)}
          onPlaying={() => (bufferingRef.current = false)}
          onPause={() => {
            if (phaseRef.current === "watching") void beat();
          }}
          onPlay={() => {
            if (phaseRef.current === "payment_required") {
              // Nothing more is paid for: hold playback until a top-up.
              videoRef.current?.pause();
              setTopUpReason("continue");
            }
          }}
        />
        {(phase === "idle" || phase === "starting") && (
          <div className="start-overlay">
            <p className="price-tag" data-testid="price">
              {ownVideo ? "Your video: free for you" : pricePerMinute(video.price_per_minute, video.currency)}
            </p>
            {!free && (
              <p className="muted small">
                Charged a minute at a time while you watch
                {balance ? ` · your balance: ${money(balance.balance, balance.currency)}` : ""}
              </p>
            )}
            <div className="row">
              {resumeAt !== null ? (
                <>
                  <button
                    type="button"
                    className="primary big"
                    disabled={phase === "starting"}
                    onClick={() => void start(resumeAt)}
                  >
                    Resume from {clock(resumeAt)}
                  </button>
                  <button
                    type="button"
                    disabled={phase === "starting"}
                    onClick={() => void start(0)}
                  >
                    Play from the start
                  </button>
                </>
              ) : (
                <button
                  type="button"
                  className="primary big"
                  disabled={phase === "starting"}
                  onClick={() => void start(0)}
                >
                  {phase === "starting" ? "Starting…" : "Play"}
                </button>
              )}
            </div>
          </div>
        )}
        {phase === "ended" && (
          <div className="start-overlay">
            <p>This viewing session has ended.</p>
            <button type="button" className="primary" onClick={() => void start(videoRef.current?.currentTime ?? 0)}>
              Watch again
            </button>
          </div>
        )}
      </div>

      <div className="player-bar">
        {levels.length > 1 && (
          <div className="field inline">
            <label htmlFor="quality">Quality</label>
            <select
              id="quality"
              value={level}
              onChange={(event) => {
                const chosen = Number(event.target.value);
                setLevel(chosen);
                if (hlsRef.current) hlsRef.current.currentLevel = chosen;
              }}
            >
              <option value={-1}>Auto</option>
              {levels.map((entry) => (
                <option key={entry.index} value={entry.index}>
                  {entry.label}
                </option>
              ))}
            </select>
          </div>
        )}
        {meter && !free && (
          <dl className="meter" aria-label="What this session has cost" aria-live="polite">
            <div>
              <dt>Minutes billed</dt>
              <dd data-testid="meter-minutes">{meter.billed_minutes}</dd>
            </div>
            <div>
              <dt>Charged</dt>
              <dd data-testid="meter-charged">{money(meter.charged_total, currency)}</dd>
            </div>
            <div>
              <dt>Balance</dt>
              <dd data-testid="meter-balance">{money(meter.balance, currency)}</dd>
            </div>
          </dl>
        )}
        {phase === "payment_required" && topUpReason === null && (
          <button type="button" className="primary" onClick={() => setTopUpReason("continue")}>
            Top up to keep watching
          </button>
        )}
      </div>
      <ErrorNote error={error} />

      <Dialog
        open={topUpReason !== null}
        title={topUpReason === "start" ? "Top up to start watching" : "Top up to keep watching"}
        onClose={() => setTopUpReason(null)}
      >
        <p>
          {topUpReason === "start"
            ? `Your wallet can't pay the first minute (${money(video.price_per_minute, video.currency)}).`
            : "Your balance has run out. Add money and the video carries on where it stopped."}
        </p>
        <TopUpForm
          currency={currency}
          onDone={(topUp) => {
            setBalance({ balance: topUp.balance, currency: topUp.currency });
            setMeter((current) => (current ? { ...current, balance: topUp.balance } : current));
            const reason = topUpReason;
            setTopUpReason(null);
            if (reason === "start") void start(startFrom.current);
            else void beat();
          }}
        />
      </Dialog>
    </div>
  );
}
