'use strict';

const { factories } = require('@strapi/strapi');

module.exports = factories.createCoreService('api::user-notification-preference.user-notification-preference');
