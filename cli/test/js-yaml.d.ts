// js-yaml 4 ships no types and @types/js-yaml is not installed: the one function the compose test calls.
// What it returns is unknown until cli/test/deployment-map.ts has decoded it.
declare module "js-yaml" {
  export function load(text: string, options?: { readonly filename?: string }): unknown;
}
