/**
 * The widget module's version: the npm package's version, which must equal the Python package's
 * (jupyter_sse/_version.py). tests/widget/test_widget_model.py checks that all three agree.
 */
export const MODULE_NAME = 'jupyter-sse';
export const MODULE_VERSION = '0.1.0';
