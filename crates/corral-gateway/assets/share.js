// share.js: the Sharing page. Shares the session with an email or stops sharing it, through
// the API, then shows the page again with the new list; a refusal (no such user, the
// owner's own email) is shown where the person typed.
'use strict';

(function () {
  const root = document.getElementById('sharing');
  if (!root) return;
  const { api } = window.corral;
  const id = encodeURIComponent(root.dataset.sandbox);
  const error = document.getElementById('share-error');
  const shares = (email) => `/api/v1/sandboxes/${id}/shares/${encodeURIComponent(email)}`;

  function refused(message, field) {
    error.textContent = message;
    error.hidden = false;
    if (field) field.focus();
  }

  async function change(method, email, field) {
    const answer = await api(method, shares(email));
    if (answer.ok) {
      window.location.reload();
    } else {
      refused(answer.message, field);
    }
  }

  document.getElementById('share-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const field = document.getElementById('share-email');
    const email = field.value.trim();
    if (email) change('PUT', email, field);
  });
  for (const button of root.querySelectorAll('button[data-unshare]')) {
    button.addEventListener('click', () => change('DELETE', button.dataset.unshare));
  }
})();
