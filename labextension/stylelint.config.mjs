// Stylelint's standard rules over style/; the class names follow JupyterLab's `jp-` kebab-case convention.
export default {
  extends: ['stylelint-config-standard'],
  rules: {
    'selector-class-pattern': ['^(jp|lm)-[a-z0-9]+(-[a-z0-9]+)*$|^Toastify', { resolveNestedSelectors: true }]
  }
};
