// Calls the /trpc adapter with the stock @trpc/client (httpLink and httpBatchLink) and prints
// one JSON object: every result, every client error, and every HTTP request the links sent.
//
// Usage: node trpc_check.mjs <base-url>
// Env:   TREEVU_ADMIN_TOKEN, TREEVU_EMPLOYEE_TOKEN (bearer tokens for an admin and an employee),
//        TREEVU_EMPLOYEE_ID (that employee's user id).
// Run by tests/integration/test_trpc_client.py, which compares the answers with the database
// and the REST API.

import { createTRPCClient, httpBatchLink, httpLink, TRPCClientError } from "@trpc/client";

const baseUrl = (process.argv[2] ?? process.env.TREEVU_BASE_URL ?? "").replace(/\/$/, "");
const adminToken = process.env.TREEVU_ADMIN_TOKEN;
const employeeToken = process.env.TREEVU_EMPLOYEE_TOKEN;
const employeeId = Number(process.env.TREEVU_EMPLOYEE_ID);
if (!baseUrl || !adminToken || !employeeToken || !Number.isInteger(employeeId)) {
  console.error(
    "usage: TREEVU_ADMIN_TOKEN=… TREEVU_EMPLOYEE_TOKEN=… TREEVU_EMPLOYEE_ID=… node trpc_check.mjs <base-url>",
  );
  process.exit(2);
}
const url = `${baseUrl}/trpc`;

/** What each link put on the wire, in order: method, path, decoded query, headers, body. */
const requests = [];

function recordingFetch(link) {
  return async (input, init = {}) => {
    const target = new URL(typeof input === "string" ? input : input.url);
    const headers = Object.fromEntries(
      Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]),
    );
    const response = await fetch(input, init);
    requests.push({
      link,
      method: init.method ?? "GET",
      path: target.pathname,
      query: Object.fromEntries(target.searchParams),
      contentType: headers["content-type"] ?? null,
      trpcAccept: headers["trpc-accept"] ?? null,
      authorization: headers.authorization ? headers.authorization.split(" ")[0] : null,
      body: init.body === undefined ? null : String(init.body),
      status: response.status,
      responseContentType: response.headers.get("content-type"),
    });
    return response;
  };
}

function client(kind, token, extra = {}) {
  const link = kind === "batch" ? httpBatchLink : httpLink;
  const label = `${kind}${extra.methodOverride ? "+override" : ""}:${token ? "auth" : "anon"}`;
  return createTRPCClient({
    links: [
      link({
        url,
        fetch: recordingFetch(label),
        headers: () => (token ? { Authorization: `Bearer ${token}` } : {}),
        ...extra,
      }),
    ],
  });
}

/** A client error as plain data; anything else that was thrown is reported as unexpected. */
function describeError(err) {
  if (!(err instanceof TRPCClientError)) {
    return { name: err?.name ?? typeof err, message: String(err?.message ?? err), trpc: false };
  }
  return {
    name: err.name,
    trpc: true,
    message: err.message,
    code: err.data?.code ?? null,
    httpStatus: err.data?.httpStatus ?? null,
    path: err.data?.path ?? null,
    jsonRpcCode: err.shape?.code ?? null,
  };
}

async function settle(promise) {
  try {
    return { ok: true, data: await promise };
  } catch (err) {
    return { ok: false, error: describeError(err) };
  }
}

async function settleAll(named) {
  const keys = Object.keys(named);
  const settled = await Promise.all(keys.map((k) => settle(named[k])));
  return Object.fromEntries(keys.map((k, i) => [k, settled[i]]));
}

const admin = client("http", adminToken);
const employee = client("http", employeeToken);
const adminBatch = client("batch", adminToken);
const employeeBatch = client("batch", employeeToken);
const anonymous = client("http", null);
const overridden = client("http", adminToken, { methodOverride: "POST" });

const out = { requests };

// One request per call.
out.http = {
  distribution: await settle(admin.segmentation.getSegmentDistribution.query()),
  risk: await settle(admin.segmentation.getRiskDistribution.query()),
  statsAtRisk: await settle(admin.segmentation.getSegmentStats.query({ segment: "at_risk" })),
  employeesAtRisk: await settle(
    admin.segmentation.getSegmentEmployees.query({ segment: "at_risk", limit: 5 }),
  ),
  campaignTargets: await settle(
    admin.segmentation.getCampaignTargets.query({
      segment: "at_risk",
      campaignType: "intervention",
      limit: 10,
    }),
  ),
  profile: await settle(employee.segmentation.getWellnessProfile.query()),
  currentSegment: await settle(employee.segmentation.getCurrentSegment.query()),
  recommendations: await settle(
    employee.segmentation.getPersonalizedRecommendations.query({ limit: 3 }),
  ),
  recompute: await settle(admin.segmentation.bulkUpdateSegments.mutate()),
};

// Calls made in the same tick: one batched GET per client, one batched POST for mutations.
out.batch = await settleAll({
  distribution: adminBatch.segmentation.getSegmentDistribution.query(),
  risk: adminBatch.segmentation.getRiskDistribution.query(),
  statsAtRisk: adminBatch.segmentation.getSegmentStats.query({ segment: "at_risk" }),
  statsChampions: adminBatch.segmentation.getSegmentStats.query({
    segment: "financial_champions",
  }),
  employeesAtRisk: adminBatch.segmentation.getSegmentEmployees.query({
    segment: "at_risk",
    limit: 5,
  }),
  campaignTargets: adminBatch.segmentation.getCampaignTargets.query({
    segment: "at_risk",
    campaignType: "intervention",
    limit: 10,
  }),
});
out.batchEmployee = await settleAll({
  profile: employeeBatch.segmentation.getWellnessProfile.query(),
  currentSegment: employeeBatch.segmentation.getCurrentSegment.query(),
  recommendations: employeeBatch.segmentation.getPersonalizedRecommendations.query({ limit: 3 }),
  // Mixed outcomes in one batch: the others still resolve.
  forbidden: employeeBatch.segmentation.getSegmentDistribution.query(),
});
out.batchMutation = await settleAll({
  recompute: adminBatch.segmentation.bulkUpdateSegments.mutate(),
});

// The notification inbox (websocket.*): mutations with input through both links.
out.inbox = {
  before: await settleAll({
    unread: employeeBatch.websocket.getUnreadCount.query(),
    preferences: employeeBatch.websocket.getPreferences.query(),
  }),
  created: await settle(
    admin.notifications.create.mutate({
      userId: employeeId,
      type: "milestone",
      title: "Three months of savings",
      message: "Your emergency fund covers three months of spending.",
    }),
  ),
};
out.inbox.after = await settleAll({
  unread: employeeBatch.websocket.getUnreadCount.query(),
  history: employeeBatch.websocket.getHistory.query({ limit: 5 }),
});
out.inbox.read = await settleAll({
  markAsRead: employeeBatch.websocket.markAsRead.mutate({
    notificationId: out.inbox.created.data?.id ?? 0,
  }),
  preferences: employeeBatch.websocket.updatePreferences.mutate({ enableMilestones: false }),
});
out.inbox.final = {
  unread: await settle(employee.websocket.getUnreadCount.query()),
  preferences: await settle(employee.websocket.getPreferences.query()),
};

out.errors = {
  forbidden: await settle(employee.segmentation.getSegmentDistribution.query()),
  forbiddenBatch: await settle(employeeBatch.segmentation.getRiskDistribution.query()),
  forbiddenMutation: await settle(employee.segmentation.bulkUpdateSegments.mutate()),
  badInput: await settle(admin.segmentation.getSegmentStats.query({ segment: "nope" })),
  badInputBatch: await settle(
    adminBatch.segmentation.getSegmentEmployees.query({ segment: "at_risk", limit: 0 }),
  ),
  missingInput: await settle(admin.segmentation.getSegmentStats.query()),
  notFound: await settle(admin.segmentation.noSuchProcedure.query()),
  notFoundBatch: await settle(adminBatch.nowhere.query({ x: 1 })),
  unauthorized: await settle(anonymous.segmentation.getWellnessProfile.query()),
  queryAsMutation: await settle(admin.segmentation.getSegmentDistribution.mutate()),
  mutationAsQuery: await settle(admin.segmentation.bulkUpdateSegments.query()),
  methodOverride: await settle(overridden.segmentation.getSegmentDistribution.query()),
};

process.stdout.write(`${JSON.stringify(out)}\n`);
