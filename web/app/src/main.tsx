import { createRoot } from "react-dom/client";
import { App } from "./App";
import { takeTokenFromFragment } from "./auth";
import "./style.css";

takeTokenFromFragment();
createRoot(document.getElementById("root")!).render(<App />);
