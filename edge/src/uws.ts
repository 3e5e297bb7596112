// uWebSockets.js silently falls back to a slow JavaScript shim when its native binary does not load on
// this platform. An edge on the shim would pass tests and then collapse under load, so it refuses to
// start; the shim is recognisable by its missing SSLApp.
import uWS from "uWebSockets.js";

export class NativeUwsUnavailableError extends Error {
  override readonly name = "NativeUwsUnavailableError";
}

export function loadNativeUws(): typeof uWS {
  if (typeof (uWS as { SSLApp?: unknown }).SSLApp !== "function") {
    throw new NativeUwsUnavailableError(
      "uWebSockets.js could not load its native binary and fell back to its JavaScript shim; " +
        "the edge needs the native build (Node 20 on glibc, package pinned in edge/package.json)",
    );
  }
  return uWS;
}
