import { Suspense, useEffect, useState, type FormEvent } from "react";
import { Link, NavLink, Outlet, useLocation, useNavigate, useSearchParams } from "react-router";
import { isCreator, useAuth } from "../auth";

function SearchBox() {
  const [params] = useSearchParams();
  const [text, setText] = useState(params.get("q") ?? "");
  const navigate = useNavigate();
  function submit(event: FormEvent) {
    event.preventDefault();
    if (text.trim()) navigate(`/search?q=${encodeURIComponent(text.trim())}`);
  }
  return (
    <form role="search" className="search" onSubmit={submit}>
      <label htmlFor="site-search">Search</label>
      <input
        id="site-search"
        type="search"
        placeholder="Videos, tags, topics"
        value={text}
        onChange={(event) => setText(event.target.value)}
      />
      <button type="submit">Search</button>
    </form>
  );
}

export function Layout() {
  const { user, ready, logout } = useAuth();
  const navigate = useNavigate();
  const location = useLocation();
  const [menuOpen, setMenuOpen] = useState(false);
  useEffect(() => setMenuOpen(false), [location.pathname]);

  return (
    <>
      <a href="#main" className="skip">
        Skip to content
      </a>
      <header className="top">
        <Link to="/" className="brand" aria-label="Streamify home">
          <span aria-hidden="true" className="logo">
            ▶
          </span>
          Streamify
        </Link>
        <SearchBox />
        <button
          type="button"
          className="menu-toggle"
          aria-expanded={menuOpen}
          aria-controls="main-nav"
          onClick={() => setMenuOpen((open) => !open)}
        >
          Menu
        </button>
        <nav id="main-nav" aria-label="Main" className={menuOpen ? "open" : undefined}>
          <NavLink to="/" end>
            Home
          </NavLink>
          {user && <NavLink to="/subscriptions">Subscriptions</NavLink>}
          {user && <NavLink to="/history">History</NavLink>}
          {user && <NavLink to="/wallet">Wallet</NavLink>}
          {user && <NavLink to="/studio">{isCreator(user) ? "Studio" : "Become a creator"}</NavLink>}
          {user?.role === "admin" && <NavLink to="/admin">Admin</NavLink>}
          {ready && !user && <NavLink to="/login">Log in</NavLink>}
          {ready && !user && (
            <NavLink to="/signup" className="button primary">
              Sign up
            </NavLink>
          )}
          {user && (
            <span className="who">
              <span className="muted">{user.display_name}</span>
              <button
                type="button"
                onClick={async () => {
                  await logout();
                  navigate("/");
                }}
              >
                Log out
              </button>
            </span>
          )}
        </nav>
      </header>
      <main id="main" tabIndex={-1}>
        {ready ? (
          <Suspense fallback={<p className="muted">Loading…</p>}>
            <Outlet />
          </Suspense>
        ) : (
          <p className="muted">Loading…</p>
        )}
      </main>
      <footer className="foot muted">
        Streamify · pay only for the minutes you watch · <a href="/api/docs">API</a>
      </footer>
    </>
  );
}
