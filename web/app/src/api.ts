import { createTRPCUntypedClient, httpBatchLink } from "@trpc/client";
import type { components } from "./api-types";
import { token } from "./auth";

export type Schemas = components["schemas"];

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

function headers(): Record<string, string> {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

/** REST under /api/v1 (the OpenAPI types describe every answer). */
export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const response = await fetch(`/api/v1${path}`, {
    ...init,
    headers: {
      ...headers(),
      ...(init.body ? { "Content-Type": "application/json" } : {}),
      ...(init.headers as Record<string, string> | undefined),
    },
  });
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const message = body?.error?.message ?? JSON.stringify(body?.detail ?? body) ?? response.statusText;
    throw new ApiError(response.status, String(message));
  }
  return body as T;
}

export const post = <T>(path: string, body?: unknown) =>
  api<T>(path, { method: "POST", body: body === undefined ? undefined : JSON.stringify(body) });

/** tRPC procedures through the stock client (the server has no TypeScript router to share). */
export const trpc = createTRPCUntypedClient({
  links: [httpBatchLink({ url: "/trpc", headers })],
});
