declare const LEMONADE_VERSION: string | undefined;

/** The package version, injected by the build; "0.0.0-dev" when running from source. */
export const VERSION: string = typeof LEMONADE_VERSION === 'string' ? LEMONADE_VERSION : '0.0.0-dev';
