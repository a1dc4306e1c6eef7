// Who is signed in. The app starts by trading the refresh cookie for an access token (a reload
// keeps you signed in without the token ever touching storage scripts can read).

import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { api, maybeSignedIn, onTokenChange, refreshSession, setSession } from "./api";

export type Role = "viewer" | "creator" | "admin";

export interface User {
  id: string;
  email: string;
  display_name: string;
  bio: string | null;
  role: Role;
  channel_id: string | null;
  created_at: string;
}

interface AuthState {
  user: User | null;
  ready: boolean;
  login(email: string, password: string): Promise<User>;
  register(email: string, password: string, displayName: string): Promise<User>;
  logout(): Promise<void>;
  /** Fetch a new token and the profile again (after a role change, say). */
  reload(): Promise<void>;
}

const AuthContext = createContext<AuthState | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const [user, setUser] = useState<User | null>(null);
  const [ready, setReady] = useState(false);

  const loadProfile = useCallback(async () => {
    const me = await api<User>("GET", "/users/me");
    setUser(me);
    return me;
  }, []);

  useEffect(() => {
    let live = true;
    void (async () => {
      try {
        if (maybeSignedIn() && (await refreshSession())) await loadProfile();
      } catch {
        setSession(null);
      } finally {
        if (live) setReady(true);
      }
    })();
    // Signed out elsewhere (a refresh refused): forget the profile too.
    const stop = onTokenChange((token) => {
      if (!token) setUser(null);
    });
    return () => {
      live = false;
      stop();
    };
  }, [loadProfile]);

  const login = useCallback(
    async (email: string, password: string) => {
      const pair = await api<{ access_token: string; expires_in: number }>("POST", "/auth/login", {
        json: { email, password },
      });
      setSession(pair.access_token, pair.expires_in);
      return loadProfile();
    },
    [loadProfile],
  );

  const register = useCallback(
    async (email: string, password: string, displayName: string) => {
      await api("POST", "/auth/register", { json: { email, password, display_name: displayName } });
      return login(email, password);
    },
    [login],
  );

  const logout = useCallback(async () => {
    try {
      await api("POST", "/auth/logout");
    } finally {
      setSession(null);
      setUser(null);
    }
  }, []);

  const reload = useCallback(async () => {
    await refreshSession();
    await loadProfile();
  }, [loadProfile]);

  const value = useMemo(
    () => ({ user, ready, login, register, logout, reload }),
    [user, ready, login, register, logout, reload],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthState {
  const state = useContext(AuthContext);
  if (!state) throw new Error("useAuth outside AuthProvider");
  return state;
}

export function isCreator(user: User | null): boolean {
  return user?.role === "creator" || user?.role === "admin";
}
