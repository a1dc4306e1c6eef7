import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the app on :5173 and forwards the API to a running `streamify up`.
const gateway = process.env.STREAMIFY_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", chunkSizeWarningLimit: 1024 },
  server: {
    proxy: {
      "/api": gateway,
      "/.well-known": gateway,
    },
  },
});
