'use strict';

// Loaded before the core router (file names sort first), so these win over `/:id`.
module.exports = {
  routes: [
    {
      method: 'GET',
      path: '/user-notification-preferences/by-user/:companyId/:botId/:userEmail',
      handler: 'api::user-notification-preference.user-notification-preference.findByUser',
      config: {
        policies: [],
        middlewares: [],
      },
    },
    {
      method: 'POST',
      path: '/user-notification-preferences/bulk-get',
      handler: 'api::user-notification-preference.user-notification-preference.bulkGet',
      config: {
        policies: [],
        middlewares: [],
      },
    },
  ],
};
