/**
 * Calls the generated types must refuse. Each line below is wrong on purpose and carries
 * `@ts-expect-error`: if the client stopped catching it (a schema typed `any`, a wrapper that lost
 * its generics), tsc would report the directive as unused and `npm run typecheck` (and
 * tests/unit/test_miniprogram_kit.py) would fail.
 */
import type { Schemas } from "@fenxiao/client";
import { createClient, merchantTransferOptions, paymentOptions } from "@fenxiao/client";

const api = createClient({ baseUrl: "https://api.example.com", appid: "wx-check" });

export async function refused(pay: Schemas["PayParams"], confirmation: Schemas["Confirmation"]): Promise<void> {
  // @ts-expect-error a route the API does not have
  await api.GET("/v1/me/nothing");
  // @ts-expect-error a method the route does not have
  await api.POST("/v1/me");
  // @ts-expect-error POST /v1/withdrawals needs a body
  await api.POST("/v1/withdrawals");
  // @ts-expect-error money is integer fen, not a string
  await api.POST("/v1/withdrawals", { body: { amount_fen: "12.34" } });
  // @ts-expect-error a path parameter is required
  await api.GET("/v1/withdrawals/{withdrawal_id}", {});
  // @ts-expect-error level is "1" | "2" | "3"
  await api.GET("/v1/me/team", { query: { level: "4" } });
  // @ts-expect-error an unknown body field
  await api.POST("/v1/referrals/scan", { body: { code: "ABCD2345", sharer: "u1" } });

  const me = await api.GET("/v1/me");
  const name: string = me.name;
  // @ts-expect-error Me has no such field
  const missing = me.balance_fen;
  const account = await api.GET("/v1/me/account");
  // @ts-expect-error available_fen is a number (fen), not a string
  const text: string = account.available_fen;

  // wx.requestPayment takes the pay call's fields, and nothing else.
  const options: WechatMiniprogram.RequestPaymentOption = { ...paymentOptions(pay) };
  // @ts-expect-error the pay call has no appId to pass
  const appId: string = paymentOptions(pay).appId;
  const transfer: WechatMiniprogram.RequestMerchantTransferOption = merchantTransferOptions(confirmation);
  void [name, missing, text, options, appId, transfer];
}
