// A product page that shares: the server's PRODUCT_PAGE (pages/product/detail?id=...&scene=CODE).
// Opened from a share card: `id` and `scene` in the query. Opened from a poster's wxacode: only
// `scene` (a wxacode carries no other parameter), so the page sends the user to the list.
import type { Schemas } from "@fenxiao/client";
import { ApiError, paymentOptions, yuan } from "@fenxiao/client";
import { api, bindPendingShare, lastShareCode, rememberScene, showError } from "../../api";

Page({
  data: {
    product: null as Schemas["Product"] | null,
    price: "",
    share: null as Schemas["Share"] | null,
    posterUrl: "",
  },

  async onLoad(query: Record<string, string | undefined>) {
    rememberScene(query);
    try {
      await bindPendingShare();
      if (!query.id) {
        wx.switchTab({ url: "/pages/index/index" });
        return;
      }
      const page = await api.GET("/v1/products", { query: { limit: 100 } });
      const product = page.items.find((p) => p.id === query.id) ?? null;
      if (!product) {
        wx.showToast({ title: "商品已下架", icon: "none" });
        return;
      }
      this.setData({ product, price: yuan(product.price_fen) });
      // My own share of this product: its path goes into the share card, its qr_url on a poster.
      const share = await api.POST("/v1/shares", { body: { product_id: product.id, channel: "card" } });
      this.setData({ share, posterUrl: share.qr_url });
    } catch (err) {
      showError(err);
    }
  },

  onShareAppMessage(): WechatMiniprogram.Page.ICustomShareContent {
    const { product, share } = this.data;
    // share.path is "pages/product/detail?id=...&scene=CODE"; the card wants a leading "/".
    return { title: product ? product.name : "好物推荐", path: share ? `/${share.path}` : "/pages/index/index" };
  },

  async buy() {
    const { product } = this.data;
    if (!product) return;
    try {
      const order: Schemas["Order"] = await api.POST("/v1/orders", {
        body: { lines: [{ product_id: product.id, qty: 1 }], share_code: lastShareCode() ?? null },
      });
      const pay = await api.POST("/v1/orders/{order_id}/pay", { path: { order_id: order.id } });
      // The five fields as the server returned them: wx.requestPayment must not change them.
      await wx.requestPayment(paymentOptions(pay));
      wx.showToast({ title: "支付成功" });
    } catch (err) {
      // wx.requestPayment rejects with { errMsg: "requestPayment:fail cancel" } when the user backs out.
      if (!(err instanceof ApiError) && String((err as { errMsg?: string }).errMsg).includes("cancel")) return;
      showError(err);
    }
  },
});
