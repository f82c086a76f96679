'use strict';

const { factories } = require('@strapi/strapi');

module.exports = factories.createCoreRouter('api::user-notification-preference.user-notification-preference');
