declare const LEMONADE_VERSION: string | undefined;
declare const LEMONADE_COMMIT: string | undefined;

/** The package version, injected by the build; "0.0.0-dev" when running from source. */
export const VERSION: string = typeof LEMONADE_VERSION === 'string' ? LEMONADE_VERSION : '0.0.0-dev';

/** The git commit the build was made from (a hex prefix, scripts/build.mjs); "" when unknown (from source, or built outside a checkout). */
export const COMMIT: string = typeof LEMONADE_COMMIT === 'string' ? LEMONADE_COMMIT : '';

/** `lemonade --version`: the version, the commit when known, and the Node.js it runs on. */
export function versionLine(node: string = process.version): string {
  return `lemonade ${VERSION} (${COMMIT === '' ? '' : `commit ${COMMIT}, `}Node.js ${node})`;
}
