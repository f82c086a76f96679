'use strict';

const { factories } = require('@strapi/strapi');

module.exports = factories.createCoreService('api::bot-notification-setting.bot-notification-setting');
