/**
 * The sample's one client and the share-code flow every page uses: remember the `scene` a page
 * or the app was opened with, log in, then POST /v1/referrals/scan (login first: scanning needs
 * the user's token, and the binding is the logged-in user's).
 */
import { ApiError, createClient, errorText, sceneOf } from "@fenxiao/client";
import type { Schemas } from "@fenxiao/client";

/** Your API's https origin: add it to 开发管理 → 开发设置 → 服务器域名 → request合法域名. */
export const API_BASE_URL = "https://api.example.com";

export const api = createClient({ baseUrl: API_BASE_URL });

let pendingCode: string | undefined;
const scanned = new Set<string>();

/** Keep the share code of a launch, a show or a page's query (`scene`, URI-decoded). */
export function rememberScene(query: Record<string, string | undefined> | undefined): string | undefined {
  const code = sceneOf(query);
  if (code) pendingCode = code;
  return code;
}

/** Login, then bind to the remembered share code once. Never blocks the page on a bad code. */
export async function bindPendingShare(): Promise<Schemas["ScanResult"] | undefined> {
  await api.ensureLogin();
  const code = pendingCode;
  if (!code || scanned.has(code)) return undefined;
  scanned.add(code);
  pendingCode = undefined;
  try {
    const result = await api.POST("/v1/referrals/scan", { body: { code } });
    if (result.coupon_id) {
      await api.POST("/v1/coupons/{coupon_id}/claim", { path: { coupon_id: result.coupon_id } });
    }
    return result;
  } catch (err) {
    // unknown_share, unknown_sharer: the user came through a dead link; nothing to tell them.
    if (err instanceof ApiError && err.status === 404) return undefined;
    throw err;
  }
}

/** The share code the current visit came through (for OrderBody.share_code). */
export function lastShareCode(): string | undefined {
  const last = [...scanned].pop();
  return last;
}

/** Show a failed call the way docs/error-codes.md says (the text comes from the API's own table). */
export function showError(err: unknown): void {
  wx.showToast({ title: errorText(err), icon: "none" });
}
