/**
 * A typed `wx.request` wrapper over the fenxiao API.
 *
 * Every type comes from `schema.d.ts`, which openapi-typescript generates from the server's
 * `/v1/openapi.json` (`make client`); nothing here repeats a schema. A path, a method, a body or
 * a parameter the document does not have fails `tsc`, and so does reading a field a response does
 * not carry.
 *
 * What the wrapper adds to `wx.request`, and only this:
 * - the base URL (a request合法域名 of the mini-program), `X-Appid` and `Authorization: Bearer`;
 * - a rejected promise with an `ApiError` (`status`, `code`, `message`) for every non-2xx, because
 *   `wx.request` calls `success` whatever the HTTP status is;
 * - `errorText(err)`: what to show the user, from the API's error table (`src/errors.ts`, generated);
 * - login: `wx.login` → POST /v1/auth/login, the token kept in storage, and one transparent
 *   re-login and retry when a call answers 401 with a code that means "log in again".
 */
import type {
  ErrorResponseJSON,
  HttpMethod,
  PathsWithMethod,
  RequestBodyJSON,
  SuccessResponseJSON,
} from "openapi-typescript-helpers";
import { ERROR_TEXT, type ErrorCode, GENERIC_ERROR_TEXT } from "./errors";
import type { components, paths } from "./schema";

export { ERROR_TEXT, type ErrorCode, GENERIC_ERROR_TEXT } from "./errors";

export type { components, paths } from "./schema";
export type Schemas = components["schemas"];

/** The operation behind `method path`, as the generated document types it. */
export type Operation<M extends HttpMethod, P extends PathsWithMethod<paths, M>> = Extract<
  paths[P][M],
  Record<string | number, unknown>
>;

/** What a call answers on success (2xx, JSON). */
export type Success<M extends HttpMethod, P extends PathsWithMethod<paths, M>> = SuccessResponseJSON<
  Operation<M, P>
>;

/** The error body of a call: `{"error": {"code", "message", "details"?}}`. */
export type ErrorBody = Schemas["ErrorBody"];

type Known<T> = [T] extends [never] ? false : [T] extends [undefined] ? false : true;
type PathPart<O> = O extends { parameters: { path: infer X } } ? { path: X } : { path?: never };
type QueryPart<O> = O extends { parameters: { query?: infer Q } }
  ? Known<Q> extends true
    ? { query?: Q }
    : { query?: never }
  : { query?: never };
type HeaderPart<O> = O extends { parameters: { header?: infer H } }
  ? Known<H> extends true
    ? { header?: Omit<NonNullable<H>, "X-Appid"> }
    : { header?: never }
  : { header?: never };
type BodyPart<O> = O extends { requestBody: unknown }
  ? { body: RequestBodyJSON<O> }
  : O extends { requestBody?: { content: { "application/json": infer B } } }
    ? { body?: B }
    : { body?: never };

/** The second argument of a call: path and query parameters, headers and the JSON body it takes. */
export type Init<O> = PathPart<O> & QueryPart<O> & HeaderPart<O> & BodyPart<O>;

type Args<O> = {} extends Init<O> ? [init?: Init<O>] : [init: Init<O>];

/** A non-2xx answer (or no answer: `status` 0, `code` "network_error"). Branch on `code`. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details: unknown = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/**
 * 401 codes after which a new `wx.login` helps (docs/error-codes.md shows 登录已失效，请重新登录
 * for them). `invalid_code` (a stale wx.login code) is not among them: it is the login call's own
 * refusal, and the client asks WeChat for a new code on the next attempt anyway.
 */
export const LOGIN_AGAIN_CODES: readonly ErrorCode[] = [
  "missing_token",
  "invalid_token",
  "token_expired",
  "tenant_mismatch",
  "unknown_user",
];

export interface ClientOptions {
  /** `https://api.example.com`: must be a request合法域名 of the mini-program (no trailing slash needed). */
  baseUrl: string;
  /** The mini-program's appid, sent as `X-Appid`; defaults to `wx.getAccountInfoSync().miniProgram.appId`. */
  appid?: string;
  /** Storage key of the token (wx.setStorageSync). */
  tokenKey?: string;
  /** Sandbox stages only: log in as `dev-<name>` instead of calling `wx.login`. */
  devLogin?: string;
  /** Request timeout in ms (wx.request's default is 60 s). */
  timeout?: number;
}

export type Login = Schemas["Login"];

/** `wx.login` as a promise: the 5-minute code for POST /v1/auth/login. */
export function wxLoginCode(): Promise<string> {
  return new Promise((resolve, reject) => {
    wx.login({
      success: (res) =>
        res.code ? resolve(res.code) : reject(new ApiError(0, "wx_login_failed", res.errMsg)),
      fail: (err) => reject(new ApiError(0, "wx_login_failed", err.errMsg)),
    });
  });
}

function queryString(query: Record<string, unknown> | undefined): string {
  if (!query) return "";
  const parts = Object.keys(query)
    .filter((key) => query[key] !== undefined && query[key] !== null)
    .map((key) => `${encodeURIComponent(key)}=${encodeURIComponent(String(query[key]))}`);
  return parts.length ? `?${parts.join("&")}` : "";
}

function fillPath(template: string, params: Record<string, unknown> | undefined): string {
  return template.replace(/\{(\w+)\}/g, (_, name: string) => {
    const value = params?.[name];
    if (value === undefined || value === null) throw new Error(`missing path parameter ${name} for ${template}`);
    return encodeURIComponent(String(value));
  });
}

function errorFrom(status: number, data: unknown): ApiError {
  const body = data as Partial<ErrorBody> | undefined;
  const error = body && typeof body === "object" ? body.error : undefined;
  if (error && typeof error.code === "string") {
    return new ApiError(status, error.code, error.message ?? "", error.details ?? null);
  }
  return new ApiError(status, "bad_response", `HTTP ${status} without the error shape`);
}

type Loose = {
  path?: Record<string, unknown>;
  query?: Record<string, unknown>;
  header?: Record<string, unknown>;
  body?: unknown;
};

export type Client = ReturnType<typeof createClient>;

export function createClient(options: ClientOptions) {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const tokenKey = options.tokenKey ?? "fenxiao.token";
  let appid = options.appid;
  let loggingIn: Promise<Login> | null = null;

  const currentAppid = (): string => {
    if (!appid) appid = wx.getAccountInfoSync().miniProgram.appId;
    return appid;
  };
  const token = (): string => (wx.getStorageSync(tokenKey) as string | undefined) ?? "";

  function send(method: HttpMethod, template: string, init: Loose, auth: boolean): Promise<unknown> {
    const header: Record<string, string> = { "X-Appid": currentAppid() };
    for (const [name, value] of Object.entries(init.header ?? {})) {
      if (value !== undefined && value !== null) header[name] = String(value);
    }
    const bearer = auth ? token() : "";
    if (bearer) header.Authorization = `Bearer ${bearer}`;
    if (init.body !== undefined) header["Content-Type"] = "application/json";
    const url = baseUrl + fillPath(template, init.path) + queryString(init.query);
    return new Promise((resolve, reject) => {
      wx.request({
        url,
        method: method.toUpperCase() as "GET" | "POST",
        header,
        data: init.body as WechatMiniprogram.IAnyObject | undefined,
        dataType: "json",
        timeout: options.timeout,
        success: (res) =>
          res.statusCode >= 200 && res.statusCode < 300
            ? resolve(res.data)
            : reject(errorFrom(res.statusCode, res.data)),
        fail: (err) => reject(new ApiError(0, "network_error", err.errMsg)),
      });
    });
  }

  /** Log in (again): a new wx.login code, POST /v1/auth/login, the token saved. One at a time. */
  function login(name?: string): Promise<Login> {
    if (!loggingIn) {
      loggingIn = (async () => {
        const code = options.devLogin ? `dev-${options.devLogin}` : await wxLoginCode();
        const body: Schemas["LoginBody"] = { code, appid: currentAppid(), name: name ?? null };
        const result = (await send("post", "/v1/auth/login", { body }, false)) as Login;
        wx.setStorageSync(tokenKey, result.token);
        return result;
      })().finally(() => {
        loggingIn = null;
      });
    }
    return loggingIn;
  }

  /** Log in unless a token is stored already. */
  async function ensureLogin(): Promise<void> {
    if (!token()) await login();
  }

  async function call(method: HttpMethod, path: string, init: Loose = {}): Promise<unknown> {
    await ensureLogin();
    try {
      return await send(method, path, init, true);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401 && (LOGIN_AGAIN_CODES as readonly string[]).includes(err.code)) {
        wx.removeStorageSync(tokenKey);
        await login();
        return send(method, path, init, true);
      }
      throw err;
    }
  }

  return {
    login,
    ensureLogin,
    /** Forget the token (the next call logs in again). */
    logout: (): void => wx.removeStorageSync(tokenKey),
    GET<P extends PathsWithMethod<paths, "get">>(path: P, ...[init]: Args<Operation<"get", P>>) {
      return call("get", path as string, init as Loose) as Promise<Success<"get", P>>;
    },
    POST<P extends PathsWithMethod<paths, "post">>(path: P, ...[init]: Args<Operation<"post", P>>) {
      return call("post", path as string, init as Loose) as Promise<Success<"post", P>>;
    },
  };
}

/** The error body a call may answer, for code that wants the type (ApiError carries the fields). */
export type Failure<M extends HttpMethod, P extends PathsWithMethod<paths, M>> = ErrorResponseJSON<Operation<M, P>>;

/**
 * The pay call's answer as `wx.requestPayment` takes it. The document types `signType` as a
 * string while WeChat's typings want 'MD5' | 'HMAC-SHA256' | 'RSA' (the server sends "RSA",
 * WeChat Pay v3): checked here instead of cast.
 */
export function paymentOptions(
  params: Schemas["PayParams"],
): Pick<WechatMiniprogram.RequestPaymentOption, "timeStamp" | "nonceStr" | "package" | "signType" | "paySign"> {
  const { signType } = params;
  if (signType !== "RSA" && signType !== "MD5" && signType !== "HMAC-SHA256") {
    throw new ApiError(0, "bad_response", `unexpected signType ${signType}`);
  }
  return {
    timeStamp: params.timeStamp,
    nonceStr: params.nonceStr,
    package: params.package,
    signType,
    paySign: params.paySign,
  };
}

/** The confirmation's fields as `wx.requestMerchantTransfer` names them. */
export function merchantTransferOptions(
  confirmation: Schemas["Confirmation"],
): Pick<WechatMiniprogram.RequestMerchantTransferOption, "mchId" | "appId" | "package"> {
  return { mchId: confirmation.mch_id, appId: confirmation.appid, package: confirmation.package_info };
}

/** The share code a page was opened with: `scene` of a share path or of a wxacode (URI-encoded). */
export function sceneOf(query: Record<string, string | undefined> | undefined): string | undefined {
  const raw = query?.scene;
  if (!raw) return undefined;
  const code = decodeURIComponent(raw).trim();
  return code || undefined;
}

/** Fen as yuan for display: 12345 → "123.45" (integer arithmetic, no floats). */
export function yuan(fen: number): string {
  const sign = fen < 0 ? "-" : "";
  const abs = Math.abs(Math.trunc(fen));
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

/** What to show the user for a failed call: the code's text from the API's table, else the generic one. */
export function errorText(err: unknown): string {
  if (err instanceof ApiError) return ERROR_TEXT[err.code as ErrorCode] ?? GENERIC_ERROR_TEXT;
  return GENERIC_ERROR_TEXT;
}
