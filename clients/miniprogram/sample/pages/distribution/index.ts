// "My distribution": who I am and my upline, my money, my team per level, my commission lines
// and this month's figures.
import type { Schemas } from "@fenxiao/client";
import { yuan } from "@fenxiao/client";
import { api, bindPendingShare, showError } from "../../api";

type Level = "1" | "2" | "3";

interface Money {
  pending: string;
  frozen: string;
  available: string;
  withdrawing: string;
  paid: string;
}

interface Line {
  key: string;
  level: number;
  buyer: string;
  amount: string;
  state: string;
  trace: string;
}

Page({
  data: {
    me: null as Schemas["Me"] | null,
    money: null as Money | null,
    level: "1" as Level,
    team: [] as Schemas["Member"][],
    teamCursor: null as string | null,
    lines: [] as Line[],
    linesCursor: null as string | null,
    month: null as Schemas["MyStats"] | null,
  },

  async onShow() {
    try {
      await bindPendingShare();
      const [me, account, month] = await Promise.all([
        api.GET("/v1/me"),
        api.GET("/v1/me/account"),
        api.GET("/v1/me/stats"),
      ]);
      this.setData({ me, money: money(account), month });
      await Promise.all([this.loadTeam(), this.loadLines()]);
    } catch (err) {
      showError(err);
    }
  },

  async loadTeam(cursor?: string) {
    const page = await api.GET("/v1/me/team", { query: { level: this.data.level, cursor } });
    this.setData({ team: cursor ? [...this.data.team, ...page.items] : page.items, teamCursor: page.next_cursor });
  },

  async loadLines(cursor?: string) {
    const page = await api.GET("/v1/me/commissions", { query: { cursor, limit: 20 } });
    const rows = page.items.map((c: Schemas["CommissionLine"]) => ({
      key: `${c.order_id}:${c.level}:${c.event}`,
      level: c.level,
      buyer: c.buyer,
      amount: yuan(c.amount_fen),
      state: c.state,
      trace: c.trace,
    }));
    this.setData({ lines: cursor ? [...this.data.lines, ...rows] : rows, linesCursor: page.next_cursor });
  },

  pickLevel(event: WechatMiniprogram.BaseEvent) {
    this.setData({ level: String(event.currentTarget.dataset.level) as Level, team: [], teamCursor: null });
    this.loadTeam().catch(showError);
  },

  moreTeam() {
    if (this.data.teamCursor) this.loadTeam(this.data.teamCursor).catch(showError);
  },

  moreLines() {
    if (this.data.linesCursor) this.loadLines(this.data.linesCursor).catch(showError);
  },

  withdraw() {
    wx.navigateTo({ url: "/pages/withdraw/index" });
  },
});

function money(account: Schemas["Account"]): Money {
  return {
    pending: yuan(account.pending_fen),
    frozen: yuan(account.frozen_fen),
    available: yuan(account.available_fen),
    withdrawing: yuan(account.withdrawing_fen),
    paid: yuan(account.paid_fen),
  };
}
