import { lazy, StrictMode, type ReactNode } from "react";
import { createRoot } from "react-dom/client";
import { BrowserRouter, Navigate, Route, Routes, useLocation } from "react-router";
import { AuthProvider, useAuth } from "./auth";
import { Layout } from "./components/Layout";
import { LoginPage, SignupPage } from "./pages/Auth";
import { HomePage, NotFoundPage, SearchPage } from "./pages/Browse";
import { ChannelPage, SubscriptionsPage } from "./pages/Channel";
import { HistoryPage } from "./pages/History";
import { StudioPage } from "./pages/Studio";
import { WalletPage } from "./pages/Wallet";
import "./styles.css";

// The player (hls.js), the charts (uPlot) and the uploader (tus) load with the pages that use them.
const AdminPage = lazy(() => import("./pages/Admin").then((m) => ({ default: m.AdminPage })));
const AnalyticsPage = lazy(() => import("./pages/Analytics").then((m) => ({ default: m.AnalyticsPage })));
const VideoAnalyticsPage = lazy(() => import("./pages/Analytics").then((m) => ({ default: m.VideoAnalyticsPage })));
const EditVideoPage = lazy(() => import("./pages/EditVideo").then((m) => ({ default: m.EditVideoPage })));
const UploadPage = lazy(() => import("./pages/Upload").then((m) => ({ default: m.UploadPage })));
const WatchPage = lazy(() => import("./pages/Watch").then((m) => ({ default: m.WatchPage })));

/** Pages that need an account send you to log in, and back here afterwards. */
function Private({ children, admin = false }: { children: ReactNode; admin?: boolean }) {
  const { user } = useAuth();
  const location = useLocation();
  if (!user) return <Navigate to={`/login?next=${encodeURIComponent(location.pathname + location.search)}`} replace />;
  if (admin && user.role !== "admin") return <p>This page is for administrators.</p>;
  return children;
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <BrowserRouter>
      <AuthProvider>
        <Routes>
          <Route element={<Layout />}>
            <Route index element={<HomePage />} />
            <Route path="search" element={<SearchPage />} />
            <Route path="login" element={<LoginPage />} />
            <Route path="signup" element={<SignupPage />} />
            <Route path="videos/:id" element={<WatchPage />} />
            <Route path="channels/:id" element={<ChannelPage />} />
            <Route path="subscriptions" element={<Private><SubscriptionsPage /></Private>} />
            <Route path="history" element={<Private><HistoryPage /></Private>} />
            <Route path="wallet" element={<Private><WalletPage /></Private>} />
            <Route path="studio" element={<Private><StudioPage /></Private>} />
            <Route path="studio/upload" element={<Private><UploadPage /></Private>} />
            <Route path="studio/videos/:id" element={<Private><EditVideoPage /></Private>} />
            <Route path="studio/analytics" element={<Private><AnalyticsPage /></Private>} />
            <Route path="studio/analytics/:id" element={<Private><VideoAnalyticsPage /></Private>} />
            <Route path="admin" element={<Private admin><AdminPage /></Private>} />
            <Route path="*" element={<NotFoundPage />} />
          </Route>
        </Routes>
      </AuthProvider>
    </BrowserRouter>
  </StrictMode>,
);
