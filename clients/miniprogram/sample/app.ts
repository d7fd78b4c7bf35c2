import { rememberScene } from "./api";

// Cold start: the launch options carry the query of the opened page (a share path or a wxacode's
// scene); hot start (the app was in the background): onShow carries the new one.
App({
  onLaunch(options) {
    rememberScene(options.query as Record<string, string | undefined>);
  },
  onShow(options) {
    rememberScene(options.query as Record<string, string | undefined>);
  },
});
