// Home: the products on sale. Also the landing page of a share without a product
// (pages/index/index?scene=CODE, the server's SHARE_PAGE).
import type { Schemas } from "@fenxiao/client";
import { yuan } from "@fenxiao/client";
import { api, bindPendingShare, rememberScene, showError } from "../../api";

interface Row {
  id: string;
  name: string;
  price: string;
}

Page({
  data: { products: [] as Row[], nextCursor: null as string | null },

  async onLoad(query: Record<string, string | undefined>) {
    rememberScene(query);
    try {
      await bindPendingShare();
      await this.load();
    } catch (err) {
      showError(err);
    }
  },

  async load(cursor?: string) {
    const page: Schemas["ProductPage"] = await api.GET("/v1/products", { query: { cursor, limit: 20 } });
    const rows = page.items.map((p) => ({ id: p.id, name: p.name, price: yuan(p.price_fen) }));
    this.setData({ products: cursor ? [...this.data.products, ...rows] : rows, nextCursor: page.next_cursor });
  },

  async onReachBottom() {
    if (this.data.nextCursor) await this.load(this.data.nextCursor).catch(showError);
  },

  open(event: WechatMiniprogram.BaseEvent) {
    wx.navigateTo({ url: `/pages/product/detail?id=${encodeURIComponent(String(event.currentTarget.dataset.id))}` });
  },
});
