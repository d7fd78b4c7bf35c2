"""WeChat Pay v3 for orders: JSAPI prepay, payment notifications, refunds; a live client and a sandbox twin.

- `protocol`: the merchant's configuration, what the app needs from WeChat Pay (`WeChatPay`),
  WeChat's limits, its answers and notifications read into domain values, its signatures;
- `live`: the real API through `wechatpayv3` (`LiveWeChatPay`);
- `sandbox`: WeChat's side played locally in SQLite, with faults (`SandboxWeChatPay`);
- `keys`: the sandbox merchant's keys and configuration (`sandbox_config`).

Callers import from the module that holds a name; `chalicelib.wechat.get_pay` picks the client.
"""
