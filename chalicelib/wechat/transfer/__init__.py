"""WeChat merchant transfers (商家转账): one bill per withdrawal; a live client and a sandbox twin.

- `protocol`: bills, their states, WeChat's limits and answers, the two failures callers tell apart;
- `live`: the real API through `wechatpayv3` (`LiveTransfer`);
- `sandbox`: WeChat's side played locally in SQLite, with faults (`SandboxTransfer`).

The package exports the bill and the two failures, which the payout service handles;
`chalicelib.wechat.get_transfer` picks the client.
"""

from chalicelib.wechat.transfer.protocol import TransferBill, TransferRejected, TransferUnclear

__all__ = ["TransferBill", "TransferRejected", "TransferUnclear"]
