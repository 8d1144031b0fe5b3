// A web developer's page after `npm install lambda-eclipse`: the package's three entry points by their bare
// names, as the README documents them, and nothing from the repository. The test drives `window.lambda`.
import * as api from 'lambda-eclipse';
import { load } from 'lambda-eclipse';
import * as tensorFiles from 'lambda-eclipse/tensor-files';
import * as widget from 'lambda-eclipse/widget';

window.lambda = {
  load,
  api,
  tensorFiles,
  widget,
  exports: { '.': Object.keys(api).sort(), './tensor-files': Object.keys(tensorFiles).sort(), './widget': Object.keys(widget).sort() },
  widgetDefined: customElements.get('lambda-eclipse-widget') === widget.LambdaEclipseWidget,
};
document.getElementById('status').textContent = 'Ready.';
document.body.dataset.ready = 'true';
