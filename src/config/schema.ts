// The config layer's entry for the layers above: the settings tables and the Config type
// (./settings.ts), reading fields (./fields.ts), validation (./validate.ts) and suggestions
// (./suggest.ts), re-exported so that one import names them.

export * from './settings';
export { normaliseAlgorithm, parseDuration, parseRate, serviceSettingsOf, settingsOf } from './fields';
export { backendTlsWarnings, validate, type ValidateContext, type ValidateResult } from './validate';
export { bagDistance, didYouMean, editDistance } from './suggest';
