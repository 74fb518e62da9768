import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// Built into the Python package (src/treevu/webui), served by the app under /app/.
export default defineConfig({
  base: "/app/",
  plugins: [react()],
  // The bell's source (../bell/src) imports react: one copy, the app's.
  resolve: { dedupe: ["react", "react-dom"] },
  build: {
    outDir: "../../src/treevu/webui",
    emptyOutDir: true,
    chunkSizeWarningLimit: 1000,
  },
});
