// Withdrawal: quote an amount (fee, net, today's limits), request it with an Idempotency-Key
// (one key per attempt, reused on retry, so a retried tap never withdraws twice), and confirm
// receipt with wx.requestMerchantTransfer when a payout waits for the user (wait_user_confirm).
import type { Schemas } from "@fenxiao/client";
import { ApiError, merchantTransferOptions, yuan } from "@fenxiao/client";
import { api, showError } from "../../api";

interface Row {
  id: string;
  amount: string;
  state: Schemas["Withdrawal"]["state"];
  waiting: boolean;
}

/** "12.34" (yuan, as typed) → 1234 fen; undefined when it is not an amount. */
function parseFen(text: string): number | undefined {
  const match = /^(\d{1,9})(?:\.(\d{1,2}))?$/.exec(text.trim());
  if (!match) return undefined;
  return Number(match[1]) * 100 + Number((match[2] ?? "").padEnd(2, "0"));
}

function newKey(): string {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

function confirmReceipt(confirmation: Schemas["Confirmation"]): Promise<void> {
  return new Promise((resolve, reject) => {
    // Base library 3.3.0+; no promise form, hence the callbacks.
    if (!wx.canIUse("requestMerchantTransfer")) {
      reject(new ApiError(0, "wechat_too_old", "requestMerchantTransfer needs base library 3.3.0"));
      return;
    }
    wx.requestMerchantTransfer({
      ...merchantTransferOptions(confirmation),
      success: () => resolve(),
      fail: (err) => reject(err),
    });
  });
}

Page({
  data: {
    amountText: "",
    realName: "",
    quote: null as Schemas["WithdrawalQuote"] | null,
    fee: "",
    net: "",
    key: "",
    rows: [] as Row[],
  },

  onShow() {
    this.loadList().catch(showError);
  },

  async loadList() {
    const page = await api.GET("/v1/withdrawals", { query: { limit: 20 } });
    const rows = page.items.map((w) => ({
      id: w.id,
      amount: yuan(w.amount_fen),
      state: w.state,
      waiting: w.state === "wait_user_confirm",
    }));
    this.setData({ rows });
  },

  onAmount(event: WechatMiniprogram.Input) {
    this.setData({ amountText: event.detail.value, quote: null, key: "" });
  },

  onRealName(event: WechatMiniprogram.Input) {
    this.setData({ realName: event.detail.value });
  },

  async quote() {
    const amount = parseFen(this.data.amountText);
    if (amount === undefined || amount <= 0) {
      wx.showToast({ title: "请输入正确的金额", icon: "none" });
      return;
    }
    try {
      const quote = await api.GET("/v1/withdrawals/quote", { query: { amount_fen: amount } });
      // A new attempt: a new key. Retrying the request below reuses it.
      this.setData({ quote, fee: yuan(quote.fee_fen), net: yuan(quote.net_fen), key: newKey() });
    } catch (err) {
      showError(err);
    }
  },

  async request() {
    const { quote, key, realName } = this.data;
    if (!quote) return;
    // From 2,000 yuan WeChat needs the payee's real name (the quote says so).
    if (quote.real_name_required && !realName.trim()) {
      wx.showToast({ title: "请填写真实姓名", icon: "none" });
      return;
    }
    try {
      const withdrawal = await api.POST("/v1/withdrawals", {
        body: { amount_fen: quote.amount_fen, real_name: quote.real_name_required ? realName.trim() : null },
        header: { "Idempotency-Key": key },
      });
      wx.showToast({ title: `已申请 ¥${yuan(withdrawal.amount_fen)}` });
      this.setData({ quote: null, amountText: "", key: "" });
      await this.loadList();
    } catch (err) {
      showError(err);
    }
  },

  async confirm(event: WechatMiniprogram.BaseEvent) {
    const id = String(event.currentTarget.dataset.id);
    try {
      const confirmation = await api.GET("/v1/withdrawals/{withdrawal_id}/confirmation", {
        path: { withdrawal_id: id },
      });
      await confirmReceipt(confirmation);
      // success means the page was shown, not that money moved: read the state back.
      const withdrawal = await api.GET("/v1/withdrawals/{withdrawal_id}", { path: { withdrawal_id: id } });
      wx.showToast({ title: withdrawal.state === "paid" ? "已到账" : "处理中", icon: "none" });
      await this.loadList();
    } catch (err) {
      showError(err);
    }
  },
});
